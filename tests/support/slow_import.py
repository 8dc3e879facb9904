"""A handler module whose import takes a while inside a hook that turns what it raises into
another exception (a class attribute's `__set_name__`: Python 3.11 re-raises it as a
RuntimeError), as third-party imports do. It touches $SLOW_IMPORT_READY first, so a test can
send a signal mid-import."""

from __future__ import annotations

import os
import time
from pathlib import Path


class _Slow:
    def __set_name__(self, owner: type, name: str) -> None:
        Path(os.environ["SLOW_IMPORT_READY"]).touch()
        time.sleep(float(os.environ.get("SLOW_IMPORT_S", "1.5")))


class _Holder:
    slow = _Slow()
