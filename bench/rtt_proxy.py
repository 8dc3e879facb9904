"""A TCP proxy that adds a fixed delay in each direction, to stand in for a network hop.

    python bench/rtt_proxy.py --target 127.0.0.1:5432 --rtt-ms 2.4 [--port 0]
    python bench/rtt_proxy.py --measure --dsn postgresql://postgres@127.0.0.1:5432/postgres

Every chunk read from one side is written to the other `rtt_ms / 2` later, in order (so
one request and its answer take `rtt_ms` more; TCP connect is not delayed). The first line
on stdout is `listening <port>`. asyncio (uvloop) does the I/O; the delays are kept by a
CLOCK_MONOTONIC timerfd rather than loop timers, whose millisecond granularity would round
1.2 ms up to 2. `--measure` prints what the proxy itself costs: `SELECT 1` round trips
direct, through the proxy adding 0 ms, and adding `--rtt-ms`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import heapq
import itertools
import os
import socket
import struct
import sys
import time

import uvloop

CLOCK_MONOTONIC = 1
TFD_NONBLOCK = os.O_NONBLOCK
TFD_CLOEXEC = os.O_CLOEXEC
TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


class _Itimerspec(ctypes.Structure):
    _fields_ = (("it_interval", _Timespec), ("it_value", _Timespec))


class Timer:
    """A timerfd the event loop watches; `arm(at)` fires it at time.monotonic() == at."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create")

    def arm(self, at: float) -> None:
        at = max(at, 1e-9)  # 0 would disarm it
        seconds = int(at)
        spec = _Itimerspec(_Timespec(0, 0), _Timespec(seconds, int((at - seconds) * 1e9)))
        if self._libc.timerfd_settime(self.fd, TFD_TIMER_ABSTIME, ctypes.byref(spec), None):
            raise OSError(ctypes.get_errno(), "timerfd_settime")

    def clear(self) -> None:
        with contextlib.suppress(BlockingIOError):
            struct.unpack("Q", os.read(self.fd, 8))


class Delayer:
    """Chunks waiting for their time, across all connections, in one heap."""

    def __init__(self, loop: asyncio.AbstractEventLoop, delay_s: float) -> None:
        self.delay_s = delay_s
        self._heap: list[tuple[float, int, asyncio.Transport, bytes]] = []
        self._seq = itertools.count()
        self._timer = Timer()
        self._armed_at: float | None = None
        loop.add_reader(self._timer.fd, self._fire)

    def send(self, transport: asyncio.Transport, data: bytes) -> None:
        if self.delay_s <= 0:
            transport.write(data)
            return
        due = time.monotonic() + self.delay_s
        heapq.heappush(self._heap, (due, next(self._seq), transport, data))
        if self._armed_at is None or due < self._armed_at:
            self._armed_at = due
            self._timer.arm(due)

    def _fire(self) -> None:
        self._timer.clear()
        now = time.monotonic()
        while self._heap and self._heap[0][0] <= now:
            _, _, transport, data = heapq.heappop(self._heap)
            if not transport.is_closing():
                transport.write(data)
        self._armed_at = self._heap[0][0] if self._heap else None
        if self._armed_at is not None:
            self._timer.arm(self._armed_at)


def _nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Side(asyncio.Protocol):
    """One end of a proxied connection; what it reads goes to `peer` after the delay."""

    def __init__(self, delayer: Delayer) -> None:
        self.delayer = delayer
        self.transport: asyncio.Transport | None = None
        self.peer: Side | None = None
        self.pending: list[bytes] = []  # read before the other end was connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        _nodelay(transport)

    def data_received(self, data: bytes) -> None:
        if self.peer is None or self.peer.transport is None:
            self.pending.append(data)
            return
        self.delayer.send(self.peer.transport, data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            # after the data still in flight to it
            asyncio.get_running_loop().call_later(
                self.delayer.delay_s + 0.01, self.peer.transport.close
            )


async def serve(target: tuple[str, int], rtt_ms: float, port: int) -> None:
    loop = asyncio.get_running_loop()
    delayer = Delayer(loop, rtt_ms / 2000)

    connecting: set[asyncio.Task[None]] = set()

    def accept() -> Side:
        client = Side(delayer)
        task = loop.create_task(connect(client))
        connecting.add(task)
        task.add_done_callback(connecting.discard)
        return client

    async def connect(client: Side) -> None:
        try:
            _, upstream = await loop.create_connection(lambda: Side(delayer), *target)
        except OSError:
            if client.transport is not None:
                client.transport.close()
            return
        upstream.peer, client.peer = client, upstream
        for data in client.pending:
            client.data_received(data)
        client.pending.clear()

    server = await loop.create_server(accept, "127.0.0.1", port)
    bound = server.sockets[0].getsockname()[1]
    print(f"listening {bound}", flush=True)
    async with server:
        await server.serve_forever()


def measure(dsn: str, rtt_ms: float) -> int:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import harness  # noqa: PLC0415 - only for --measure

    rows = uvloop.run(harness.proxy_cost(dsn, rtt_ms))
    print(harness.table(rows, ["path", "p50_ms", "p95_ms"]))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", default="127.0.0.1:5432", help="host:port to forward to")
    parser.add_argument("--rtt-ms", type=float, default=2.4, help="round trip to add, in ms")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free)")
    parser.add_argument("--measure", action="store_true", help="print the proxy's own cost")
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    if args.rtt_ms < 0:
        parser.error("--rtt-ms must be 0 or more")
    if args.measure:
        return measure(args.dsn, args.rtt_ms)
    host, _, port = args.target.rpartition(":")
    if not host or not port.isdigit():
        parser.error("--target must be host:port")
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve((host, int(port)), args.rtt_ms, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
