from __future__ import annotations

import sys

from worker import cli

sys.exit(cli.main())
