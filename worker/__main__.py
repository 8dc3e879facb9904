from __future__ import annotations

import signal
import sys
from types import FrameType

# SIGTERM or SIGINT while importing (nothing claimed yet) is kept here and acted on by
# cli.main as soon as it takes the signals over: the process then stops quietly instead of
# dying by the signal. (Raising from the handler instead could land inside an import that
# swallows the exception, and the stop would be lost.)
_received: list[int] = []


def _keep(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)


signal.signal(signal.SIGTERM, _keep)
signal.signal(signal.SIGINT, _keep)

from worker import cli  # noqa: E402  (after the handlers: importing takes a while)

sys.exit(cli.main(received=_received))
