from __future__ import annotations

import signal
import sys
from types import FrameType

# SIGTERM or SIGINT while importing (nothing claimed yet) is recorded here, never raised:
# raising from the handler could land inside an import that turns the exception into another
# one, and the stop would end in a traceback. cli.main acts on what was recorded; the daemon
# and `serve` keep this handler until their event loop takes the signals over (service.py).
_received: list[int] = []


def _keep(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)


signal.signal(signal.SIGTERM, _keep)
signal.signal(signal.SIGINT, _keep)

from worker import cli, executor  # noqa: E402  (after the handlers: importing takes a while)

code = cli.main(received=_received)
if executor.THREADS.running:
    # Sync handlers' threads still running (timed out, or abandoned at shutdown; their jobs
    # were given back or failed): Python would wait for them at exit, possibly forever.
    # Run the exit handlers (they stop an embedded PostgreSQL), then leave without them.
    import atexit
    import os

    import structlog

    structlog.get_logger("worker").warning(
        "sync_threads_abandoned", threads=executor.THREADS.running
    )
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
