"""A small HTTP/1.1 server on asyncio streams, for /health, /metrics and the dashboard.

One request per connection (`Connection: close`). Everything a client sends is bounded: the
head in size and time, the body in size (Content-Length required, no chunked bodies) and
time, and the number of open connections. A slow or hostile client holds a few KiB for a
few seconds and never blocks the worker. No web framework: a router of a dozen routes and a
form parser do not justify one.

- `Request` / `Response`: what a handler receives and returns.
- `Router`: method + path pattern (`/dashboard/jobs/{id:int}`) -> handler, 404 and 405 with
  `Allow`; `mount(prefix, handler)` hands a whole subtree to one handler (the dashboard).
- `HttpServer`: accepts connections, parses, calls one handler, writes, lingers, closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs, unquote

import structlog

log = structlog.get_logger("worker.http")


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Request:
    """One parsed request. `headers` keys are lower-case; `query` maps each name to all its
    values; `params` holds the typed path parameters of the matched route."""

    method: str
    path: str
    query: Mapping[str, list[str]] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    remote_addr: str = ""
    params: Mapping[str, int | str] = field(default_factory=dict)

    @property
    def cookies(self) -> dict[str, str]:
        """Cookies of the `Cookie` header (the first of each name wins)."""
        jar: dict[str, str] = {}
        for pair in self.headers.get("cookie", "").split(";"):
            name, sep, value = pair.strip().partition("=")
            if sep and name and name not in jar:
                jar[name] = value.strip()
        return jar

    def form(self) -> dict[str, list[str]]:
        """An application/x-www-form-urlencoded body; empty for any other content type."""
        content_type = self.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            return {}
        return _parse_pairs(self.body.decode("utf-8", errors="replace"))

    def arg(self, name: str) -> str:
        """The first query value of `name`, or ""."""
        values = self.query.get(name)
        return values[0] if values else ""

    def int_param(self, name: str) -> int:
        value = self.params[name]
        assert isinstance(value, int)
        return value

    def str_param(self, name: str) -> str:
        return str(self.params[name])


Handler = Callable[[Request], Awaitable[Response]]


class BadRequest(Exception):
    """The request cannot be served; `status` says why (400, 408, 411, 413)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def text(status: int, message: str, *headers: tuple[str, str]) -> Response:
    return Response(status, f"{message}\n".encode(), headers=headers)


_MAX_FIELDS = 200


def _parse_pairs(qs: str) -> dict[str, list[str]]:
    try:
        return parse_qs(qs, keep_blank_values=True, max_num_fields=_MAX_FIELDS, errors="replace")
    except ValueError:
        raise BadRequest(f"more than {_MAX_FIELDS} fields") from None


# -- routing --------------------------------------------------------------------------------

# {name} is one path segment; {name:int} a non-negative integer that fits a bigint.
_PARAM = re.compile(r"\{([a-z_]+)(?::(int))?\}")
_SEGMENT = {None: r"[^/]+", "int": r"[0-9]{1,18}"}


@dataclass(frozen=True, slots=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    ints: frozenset[str]
    handler: Handler


class Router:
    """Routes by method and path pattern; a mounted prefix takes its whole subtree."""

    def __init__(self) -> None:
        self._routes: list[_Route] = []
        self._mounts: list[tuple[str, Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        regex, ints, end = "", set(), 0
        for match in _PARAM.finditer(pattern):
            regex += re.escape(pattern[end : match.start()])
            name, kind = match.group(1), match.group(2)
            regex += f"(?P<{name}>{_SEGMENT[kind]})"
            if kind == "int":
                ints.add(name)
            end = match.end()
        regex += re.escape(pattern[end:])
        self._routes.append(_Route(method, re.compile(regex), frozenset(ints), handler))

    def get(self, pattern: str, handler: Handler) -> None:
        self.add("GET", pattern, handler)

    def post(self, pattern: str, handler: Handler) -> None:
        self.add("POST", pattern, handler)

    def mount(self, prefix: str, handler: Handler) -> None:
        """`handler` answers `prefix` and every path under `prefix/`."""
        self._mounts.append((prefix.rstrip("/"), handler))

    async def __call__(self, request: Request) -> Response:
        for prefix, handler in self._mounts:
            if request.path == prefix or request.path.startswith(prefix + "/"):
                return await handler(request)
        allowed: list[str] = []
        for route in self._routes:
            match = route.pattern.fullmatch(request.path)
            if match is None:
                continue
            if route.method != request.method:
                allowed.append(route.method)
                continue
            params: dict[str, int | str] = {
                name: int(value) if name in route.ints else unquote(value)
                for name, value in match.groupdict().items()
            }
            return await route.handler(replace(request, params=params))
        if allowed:
            methods = ", ".join(dict.fromkeys(allowed))
            return text(405, f"only {methods} is supported", ("Allow", methods))
        return text(404, "not found")


# -- the server -------------------------------------------------------------------------------

_REASONS = {
    200: "OK",
    303: "See Other",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    411: "Length Required",
    413: "Content Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
# METHOD SP origin-form-target SP HTTP/1.x, printable ASCII only.
_REQUEST_LINE = re.compile(rb"([A-Z]{1,16}) (/[\x21-\x7e]{0,2047}) HTTP/1\.[01]")
_HEADER_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):([\x09\x20-\x7e\x80-\xff]*)")
# Enough to read a refused body of the largest size we accept and then some, so the client
# sees our answer (413, 411) instead of a reset.
_LINGER_BYTES = 256 * 1024


class HttpServer:
    """HTTP/1.1, one request per connection, one handler (usually a Router). The request
    head is bounded in size (`max_head_bytes`) and time (`timeout_s`), the body in size
    (`max_body_bytes`) and time, and so is the number of open connections."""

    def __init__(
        self,
        handler: Handler,
        *,
        host: str,
        port: int,
        max_head_bytes: int = 8192,
        max_body_bytes: int = 64 * 1024,
        timeout_s: float = 5.0,
        max_connections: int = 32,
    ) -> None:
        self.handler = handler
        self.host = host
        self.requested_port = port
        self.max_head_bytes = max_head_bytes
        self.max_body_bytes = max_body_bytes
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._server is not None, "not started"
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.requested_port, limit=self.max_head_bytes
        )

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        # From Python 3.12 this also waits for closed connections to flush: bounded, so a
        # client that stopped reading cannot hold up the worker's exit.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.timeout_s):
                await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        answered = False
        try:
            if len(self._connections) > self.max_connections:
                response: Response | None = text(503, "too many connections")
            else:
                response = await self._respond(reader, _peer(writer))
            if response is not None:
                async with asyncio.timeout(self.timeout_s):
                    await self._write(writer, response)
                    await self._linger(reader)
            answered = True
        except (OSError, TimeoutError):
            pass  # the client went away or stalled: nothing more to tell it
        except asyncio.CancelledError:
            # close() while this connection lingers: end quietly (re-raising only makes
            # asyncio's stream callback log the cancellation as an error).
            pass
        finally:
            self._connections.discard(task)
            if answered:
                writer.close()  # sends what is left of the response, then FIN
            else:
                writer.transport.abort()  # never wait on a client that stopped reading

    async def _respond(self, reader: asyncio.StreamReader, remote_addr: str) -> Response | None:
        try:
            async with asyncio.timeout(self.timeout_s):
                head = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            return text(408, "request head not received in time")
        except asyncio.LimitOverrunError:
            return text(400, f"request head larger than {self.max_head_bytes} bytes")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                return None  # connected and left (a TCP probe)
            return text(400, "incomplete request")
        try:
            request = _parse_head(head, remote_addr)
            request = replace(request, body=await self._read_body(reader, request))
        except BadRequest as exc:
            return text(exc.status, str(exc))
        try:
            return await self.handler(request)
        except Exception:  # a broken route must answer 500, not kill the connection silently
            log.exception("http_route_failed", path=request.path)
            return text(500, "internal error")

    async def _read_body(self, reader: asyncio.StreamReader, request: Request) -> bytes:
        if "transfer-encoding" in request.headers:
            raise BadRequest("chunked request bodies are not supported", 411)
        length_text = request.headers.get("content-length")
        if length_text is None:
            if request.method == "POST":
                raise BadRequest("Content-Length is required", 411)
            return b""
        if not length_text.isdigit() or len(length_text) > 12:
            raise BadRequest("invalid Content-Length")
        length = int(length_text)
        if length > self.max_body_bytes:
            raise BadRequest(f"request body larger than {self.max_body_bytes} bytes", 413)
        try:
            async with asyncio.timeout(self.timeout_s):
                return await reader.readexactly(length)
        except TimeoutError:
            raise BadRequest("request body not received in time", 408) from None
        except asyncio.IncompleteReadError:
            raise BadRequest("incomplete request body") from None

    async def _write(self, writer: asyncio.StreamWriter, response: Response) -> None:
        lines = [
            f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Unknown')}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            "Connection: close",
            "Cache-Control: no-store",
            *(f"{name}: {_header_value(value)}" for name, value in response.headers),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body)
        await writer.drain()
        writer.write_eof()

    async def _linger(self, reader: asyncio.StreamReader) -> None:
        """Read what the client still sends until it closes: closing a socket with unread
        input makes the kernel send a reset, which can destroy the response in flight."""
        received = 0
        while received < _LINGER_BYTES:
            chunk = await reader.read(16384)
            if not chunk:
                return
            received += len(chunk)


def _header_value(value: str) -> str:
    """Header values never carry a line break (no response splitting, whatever the caller)."""
    return value.replace("\r", " ").replace("\n", " ")


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return ""


def _parse_head(head: bytes, remote_addr: str = "") -> Request:
    """The request of a head (body not read yet); BadRequest when it is not HTTP/1.x."""
    request_line, *header_lines = head[:-4].split(b"\r\n")
    match = _REQUEST_LINE.fullmatch(request_line)
    if match is None:
        raise BadRequest("malformed request line")
    headers: dict[str, str] = {}
    for line in header_lines:
        header = _HEADER_LINE.fullmatch(line)
        if header is None:
            raise BadRequest("malformed header line")
        name = header.group(1).decode("ascii").lower()
        value = header.group(2).decode("latin-1").strip()
        separator = "; " if name == "cookie" else ", "
        headers[name] = f"{headers[name]}{separator}{value}" if name in headers else value
    target = match.group(2).decode("ascii")
    path, _, query = target.partition("?")
    return Request(
        method=match.group(1).decode("ascii"),
        path=path,
        query=_parse_pairs(query),
        headers=headers,
        remote_addr=remote_addr,
    )
