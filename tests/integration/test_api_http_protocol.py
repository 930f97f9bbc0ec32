"""The API's HTTP protocol (httptools) on a real uvicorn server: a request's head is held to
16 KiB, whether it grows by header lines or within one header that never ends, while
large bodies and several requests on one connection are served. (uvicorn's own httptools
protocol fails both bounds; its h11 protocol, the first, for a head sent in one write.)"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from services.api.http_protocol import HEAD_LIMIT, HttpProtocol
from tests.integration.api import served

SEEN: list[str] = []


async def _echo(request: Request) -> PlainTextResponse:
    SEEN.append(request.url.path)
    body = await request.body()
    return PlainTextResponse(f"{request.url.path}:{len(body)}")


@contextlib.asynccontextmanager
async def _serving() -> AsyncIterator[int]:
    app = Starlette(routes=[Route("/{path}", _echo, methods=["GET", "POST"])])
    async with served(app, http=HttpProtocol) as (_server, port):
        yield port


async def _exchange(port: int, *chunks: bytes) -> bytes:
    """Send the chunks one write each while reading, until the server closes or goes quiet
    (read as it arrives: a write after the server's close resets the connection, and a
    reset drops what was not yet read)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = bytearray()

    async def read() -> None:
        with contextlib.suppress(TimeoutError, ConnectionError):
            while part := await asyncio.wait_for(reader.read(65536), 1.0):
                answer.extend(part)

    reading = asyncio.create_task(read())
    try:
        for chunk in chunks:
            if reading.done():
                break
            writer.write(chunk)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            await asyncio.sleep(0.02)
        await reading
        return bytes(answer)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def _get(path: str, *headers: bytes) -> bytes:
    return b"GET /" + path.encode() + b" HTTP/1.1\r\nhost: x\r\n" + b"".join(headers) + b"\r\n"


async def test_a_head_of_many_header_lines_over_the_limit_is_refused_before_the_app() -> None:
    SEEN.clear()
    lines = [b"x-pad-%d: %s\r\n" % (n, b"a" * 1000) for n in range(HEAD_LIMIT // 1000 + 2)]
    async with _serving() as port:
        answer = await _exchange(port, _get("big", *lines))
        fitting = await _exchange(port, _get("fits", *lines[: HEAD_LIMIT // 1000 - 2]))
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:80]
    assert fitting.startswith(b"HTTP/1.1 200 "), fitting[:80]
    assert SEEN == ["/fits"]


async def test_one_header_that_never_ends_is_refused_once_past_the_limit() -> None:
    """httptools gathers a header's value across reads; the count is of bytes received."""
    SEEN.clear()
    start = b"GET /endless HTTP/1.1\r\nhost: x\r\nx-endless: "
    async with _serving() as port:
        answer = await _exchange(port, start, *[b"a" * 4096] * 8)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:80]
    assert SEEN == []


async def test_large_bodies_and_several_requests_on_one_connection_are_served() -> None:
    SEEN.clear()
    body = b"b" * (4 * HEAD_LIMIT)
    post = b"POST /body HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    async with _serving() as port:
        # The head and a body four times the limit in one write; then two requests more.
        answer = await _exchange(port, post + _get("second") + _get("third"))
    assert answer.count(b"HTTP/1.1 200 ") == 3, answer[:200]
    assert b"/body:%d" % len(body) in answer
    assert SEEN == ["/body", "/second", "/third"]
