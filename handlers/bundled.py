"""Importing this module registers every bundled handler: all apps and the demo's.

For `python -m worker demo` and the tests (WORKER_HANDLER_MODULES=handlers.bundled), which
show everything; a deployment loads only the apps it serves (handlers.APPS).
"""

from __future__ import annotations

import importlib

from handlers.apps import APPS

for _app in APPS.values():
    for _module in _app.modules:
        importlib.import_module(_module)
