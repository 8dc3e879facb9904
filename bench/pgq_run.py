"""`pgq run FACTORY [--batch-size N]` without its command line, which fails with the typer
this project installs (`pgq run` passes the log level on as a str: AttributeError: 'str'
object has no attribute 'name'). It does what that command does, at the same defaults: the
pgqueuer logger at INFO (stdout and stderr), then `pgqueuer.run(factory, batch_size=...)`,
pgqueuer's documented Python entry point, on uvloop."""

from __future__ import annotations

import argparse
import sys

import pgqueuer
import uvloop
from pgqueuer.core import logconfig


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("factory", help="module:function returning a PgQueuer")
    parser.add_argument("--batch-size", type=int, default=10, help="pgq run's default: 10")
    args = parser.parse_args()
    logconfig.setup_fancy_logger(logconfig.LogLevel.INFO)
    uvloop.run(pgqueuer.run(args.factory, batch_size=args.batch_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
