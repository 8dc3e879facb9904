"""A real HTTP/1.1 server on 127.0.0.1 for handler tests (asyncio + h11, real sockets).

    async with FakeApi() as api:
        @api.route("GET", "/v1/players/{player}/games")
        def games(request: Request) -> Response:
            return Response(json={"games": [], "has_more": False})
        ... api.url ...
        assert api.requests[0].query["after_time_unix"] == "0"

Routes are plain functions of the request (sync or async); an unrouted request gets a 404.
Every request is recorded, headers included, so tests can check what was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

import h11


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    """Lower-cased names."""
    body: bytes
    params: dict[str, str] = field(default_factory=dict)
    """Values of the route's {placeholders}."""

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Response:
    status: int = 200
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    text: str | None = None

    def encode(self) -> tuple[bytes, list[tuple[str, str]]]:
        if self.text is not None:
            body, kind = self.text.encode(), "text/plain; charset=utf-8"
        else:
            body, kind = json.dumps(self.json).encode(), "application/json"
        headers = {"content-type": kind, **{k.lower(): v for k, v in self.headers.items()}}
        headers["content-length"] = str(len(body))
        return body, list(headers.items())


Route = Callable[[Request], Response | Awaitable[Response]]


def _pattern(path: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[a-z_]+\})", path)
    regex = "".join(
        f"(?P<{part[1:-1]}>[^/]+)" if part.startswith("{") else re.escape(part) for part in parts
    )
    return re.compile(f"^{regex}$")


class FakeApi:
    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._routes: list[tuple[str, re.Pattern[str], Route]] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.url = ""

    def route(self, method: str, path: str) -> Callable[[Route], Route]:
        def register(func: Route) -> Route:
            self._routes.insert(0, (method.upper(), _pattern(path), func))  # newest wins
            return func

        return register

    def requests_to(self, path_prefix: str) -> list[Request]:
        return [r for r in self.requests if r.path.startswith(path_prefix)]

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        host, port = self._server.sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):  # routes still busy (a slow response in a timeout test)
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in list(self._writers):
            writer.close()
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await self._read_request(conn, reader)
                if request is None:
                    break
                self.requests.append(request)
                response = await self._dispatch(request)
                body, headers = response.encode()
                data = conn.send(h11.Response(status_code=response.status, headers=headers))
                data = (data or b"") + (conn.send(h11.Data(data=body)) or b"")
                data += conn.send(h11.EndOfMessage()) or b""
                writer.write(data)
                await writer.drain()
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    break
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError):
            pass
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader
    ) -> Request | None:
        head: h11.Request | None = None
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                if not data:
                    return None
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                target = urlsplit(head.target.decode())
                return Request(
                    method=head.method.decode(),
                    path=target.path,
                    query=dict(parse_qsl(target.query)),
                    headers={k.decode().lower(): v.decode() for k, v in head.headers},
                    body=body,
                )
            elif isinstance(event, h11.ConnectionClosed):
                return None

    async def _dispatch(self, request: Request) -> Response:
        for method, pattern, func in self._routes:
            match = pattern.match(request.path)
            if method == request.method and match:
                routed = Request(**{**request.__dict__, "params": match.groupdict()})
                result = func(routed)
                return await result if inspect.isawaitable(result) else result
        return Response(404, {"error": f"no route for {request.method} {request.path}"})
