"""The HTTP server and router (worker.http), without a database."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.support.telemetry import raw_request, status_of
from worker import http
from worker.http import HttpServer, Request, Response, Router


async def _ok(request: Request) -> Response:
    return Response(200, b"fine\n")


async def _broken(request: Request) -> Response:
    raise RuntimeError("bug")


async def _echo(request: Request) -> Response:
    """What the server parsed, as text: method, params, query, form, cookies, remote."""
    parts = [
        request.method,
        repr(dict(request.params)),
        repr(dict(request.query)),
        repr(request.form()),
        repr(request.cookies),
        request.remote_addr,
    ]
    return Response(200, "\n".join(parts).encode(), headers=(("X-Test", "a\r\nInjected: 1"),))


async def _app(request: Request) -> Response:
    return Response(200, f"app saw {request.path}".encode())


def router() -> Router:
    routes = Router()
    routes.get("/ok", _ok)
    routes.get("/broken", _broken)
    routes.get("/items/{id:int}", _echo)
    routes.post("/items/{id:int}", _echo)
    routes.get("/names/{name}", _echo)
    routes.mount("/app", _app)
    return routes


@contextlib.asynccontextmanager
async def serving(**options: Any) -> AsyncIterator[HttpServer]:
    server = HttpServer(router(), host="127.0.0.1", port=0, **options)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@contextlib.asynccontextmanager
async def client_of(**options: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        serving(**options) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client,
    ):
        yield client


async def get_status(server: HttpServer, path: str = "/ok") -> int:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
        return (await client.get(path)).status_code


async def test_routes_methods_and_errors() -> None:
    async with client_of() as client:
        ok = await client.get("/ok?verbose=1")
        assert (ok.status_code, ok.text, ok.headers["connection"]) == (200, "fine\n", "close")
        assert (await client.get("/nope")).status_code == 404
        post = await client.post("/ok", content=b"x")
        assert (post.status_code, post.headers["allow"]) == (405, "GET")
        assert (await client.get("/broken")).status_code == 500


async def test_typed_params_query_form_and_cookies() -> None:
    async with client_of() as client:
        got = await client.get("/items/42?a=1&a=2&b=", headers={"Cookie": "s=v1; t=x=y"})
        method, params, query, form, cookies, remote = got.text.split("\n")
        assert (method, params) == ("GET", "{'id': 42}")
        assert query == "{'a': ['1', '2'], 'b': ['']}"
        assert (form, cookies, remote) == ("{}", "{'s': 'v1', 't': 'x=y'}", "127.0.0.1")
        # No header line of ours is split by a value that carries CR/LF.
        assert got.headers["x-test"] == "a  Injected: 1"
        assert "injected" not in got.headers
        posted = await client.post("/items/7", data={"note": "a&b=c", "n": "2"})
        assert posted.text.split("\n")[3] == "{'note': ['a&b=c'], 'n': ['2']}"
        named = await client.get("/names/a%20b")
        assert named.text.split("\n")[1] == "{'name': 'a b'}"


async def test_a_non_numeric_or_huge_int_param_is_not_found() -> None:
    async with client_of() as client:
        assert (await client.get("/items/abc")).status_code == 404
        assert (await client.get("/items/-1")).status_code == 404
        assert (await client.get("/items/" + "9" * 19)).status_code == 404
        assert (await client.get("/items/1/more")).status_code == 404


async def test_a_mount_takes_its_whole_subtree() -> None:
    async with client_of() as client:
        assert (await client.get("/app")).text == "app saw /app"
        assert (await client.post("/app/x/y", content=b"")).text == "app saw /app/x/y"
        assert (await client.get("/apple")).status_code == 404


async def test_request_bodies_are_bounded() -> None:
    async with serving(max_body_bytes=1024) as server:
        port = server.port
        at_limit = b"POST /items/1 HTTP/1.1\r\nContent-Length: 1024\r\n\r\n" + b"x" * 1024
        assert status_of(await raw_request(port, at_limit)) == 200
        over = b"POST /items/1 HTTP/1.1\r\nContent-Length: 1025\r\n\r\n" + b"x" * 1025
        assert status_of(await raw_request(port, over)) == 413
        no_length = b"POST /items/1 HTTP/1.1\r\n\r\n"
        assert status_of(await raw_request(port, no_length)) == 411
        chunked = (
            b"POST /items/1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        )
        assert status_of(await raw_request(port, chunked)) == 411
        bad_length = b"POST /items/1 HTTP/1.1\r\nContent-Length: -5\r\n\r\n"
        assert status_of(await raw_request(port, bad_length)) == 400
        short = b"POST /items/1 HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"
        assert status_of(await raw_request(port, short)) == 400
        assert await get_status(server) == 200


async def test_an_oversize_body_from_a_real_client_gets_413_not_a_reset() -> None:
    async with client_of() as client:
        response = await client.post("/items/1", content=b"x" * (64 * 1024 + 1))
        assert response.status_code == 413


async def test_a_body_that_never_arrives_times_out() -> None:
    async with serving(timeout_s=0.3) as server:
        stalled = b"POST /items/1 HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"
        answer = await raw_request(server.port, stalled, half_close=False)
        assert status_of(answer) == 408


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # a TLS hello
        b"GET /ok HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET /ok HTTP/1.1\r\n",  # cut short
        b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n",  # oversized request line
        b"GET /ok HTTP/1.1\r\n" + b"X-Pad: " + b"p" * 9000 + b"\r\n\r\n",  # oversized headers
        b"GET /ok?" + b"&".join(b"f%d=1" % i for i in range(300)) + b" HTTP/1.1\r\n\r\n",
    ],
)
async def test_bad_requests_get_400_and_the_server_keeps_serving(request_bytes: bytes) -> None:
    async with serving() as server:
        assert status_of(await raw_request(server.port, request_bytes)) == 400
        assert await get_status(server) == 200


async def test_a_silent_client_times_out_without_blocking_others() -> None:
    async with serving(timeout_s=0.3) as server:
        slow = asyncio.create_task(
            raw_request(server.port, b"GET /ok HTTP/1.1\r\n", half_close=False)
        )
        assert await get_status(server) == 200  # served while the slow one is still open
        assert status_of(await slow) == 408


async def test_connections_beyond_the_limit_are_refused() -> None:
    get = b"GET /ok HTTP/1.1\r\n\r\n"
    async with serving(max_connections=2) as server:
        held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(2)]
        try:
            # Accepted in order: the two held connections count before this third one.
            assert status_of(await raw_request(server.port, get)) == 503
            for reader, writer in held:  # the held ones are still served
                writer.write(get)
                writer.write_eof()
                assert status_of(await reader.read()) == 200
        finally:
            for _, writer in held:
                writer.close()
        # Their slots are given back once they end.
        await asyncio.wait_for(asyncio.gather(*server._connections), timeout=5)
        assert await get_status(server) == 200


async def test_a_probe_that_connects_and_leaves_is_harmless() -> None:
    async with serving() as server:
        assert await raw_request(server.port, b"") == b""
        assert await get_status(server) == 200


def test_form_ignores_other_content_types() -> None:
    request = Request("POST", "/x", headers={"content-type": "application/json"}, body=b"a=1")
    assert request.form() == {}
    urlencoded = Request(
        "POST",
        "/x",
        headers={"content-type": "application/x-www-form-urlencoded; charset=utf-8"},
        body=b"a=1&a=%3Cb%3E",
    )
    assert urlencoded.form() == {"a": ["1", "<b>"]}
    assert http.text(404, "gone").body == b"gone\n"
