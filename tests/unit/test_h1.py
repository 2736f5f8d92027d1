"""``qanat.storage.http.h1``: the node client's own HTTP/1.1, against small real servers
on 127.0.0.1 (answers with a length, chunked, closing; a server that drops idle
connections; one that never answers; nobody listening)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
import pytest_asyncio

from qanat.storage.http import h1

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    line = (await reader.readline()).decode()
    headers = {}
    while (h := await reader.readline()) not in (b"\r\n", b""):
        k, _, v = h.decode().partition(":")
        headers[k.strip().lower()] = v.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return line.strip(), headers, body


@pytest_asyncio.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    servers: list[asyncio.Server] = []
    writers: list[asyncio.StreamWriter] = []

    async def start(handler: Handler) -> str:
        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)  # closed at the end, whatever the handler did
            await handler(reader, writer)

        server = await asyncio.start_server(tracked, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/node/v1"

    yield start
    for s in servers:
        s.close()
        await s.wait_closed()
    for w in writers:
        w.close()
        with contextlib.suppress(ConnectionError):
            await w.wait_closed()


async def test_lengths_chunks_and_keep_alive(serve: Callable[[Handler], Awaitable[str]]) -> None:
    seen: list[tuple[str, dict[str, str], bytes]] = []
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while not reader.at_eof():
            try:
                line, headers, body = await read_request(reader)
            except asyncio.IncompleteReadError:
                break
            if not line:
                break
            seen.append((line, headers, body))
            if line.startswith("GET /node/v1/chunked"):
                writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                             b"3\r\n{\"a\r\n5\r\n\": 1}\r\n0\r\n\r\n")  # fmt: skip
            else:
                out = b'{"echo": ' + (body or b"null") + b"}"
                writer.write(b"HTTP/1.1 201 Created\r\nx-qanat-now: 12.5\r\n"
                             b"content-length: %d\r\n\r\n%s" % (len(out), out))  # fmt: skip
            await writer.drain()
        writer.close()

    client = h1.H1Client(await serve(handler), {"Authorization": "Bearer t"}, timeout=5)
    try:
        r = await client.request("POST", "/call/x", content=b"[1, 2]")
        assert (r.status_code, r.reason_phrase, r.content) == (201, "Created", b'{"echo": [1, 2]}')
        assert r.headers["x-qanat-now"] == "12.5"
        r = await client.request("GET", "/chunked", headers={"x-qanat-retry": "1"})
        assert r.content == b'{"a": 1}'
    finally:
        await client.aclose()
    assert connections == 1  # both on one kept-alive connection
    (post, ph, pb), (get, gh, _) = seen
    assert post == "POST /node/v1/call/x HTTP/1.1" and pb == b"[1, 2]"
    assert ph["authorization"] == "Bearer t" and ph["content-length"] == "6"
    assert get == "GET /node/v1/chunked HTTP/1.1" and gh["x-qanat-retry"] == "1"


async def test_a_closed_or_stale_connection_is_not_reused(
    serve: Callable[[Handler], Awaitable[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    connections = 0

    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    client = h1.H1Client(await serve(once), {}, timeout=5)
    try:
        assert (await client.request("GET", "/a")).content == b"ok"
        assert (await client.request("GET", "/b")).content == b"ok"
        assert connections == 2
        monkeypatch.setattr(h1, "IDLE_EXPIRY", 0.0)  # every idle connection is stale
        assert (await client.request("GET", "/c")).content == b"ok"
        assert connections == 3
    finally:
        await client.aclose()


async def test_failures_are_httpx_errors_saying_what_happened(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()  # never answers; ends when the client hangs up

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.close()

    client = h1.H1Client(await serve(silent), {}, timeout=5)
    with pytest.raises(httpx.ReadTimeout, match=r"no answer to GET /node/v1/w in 0\.2s"):
        await client.request("GET", "/w", timeout=0.2)
    await client.aclose()
    client = h1.H1Client(await serve(hang_up), {}, timeout=5)
    with pytest.raises(httpx.RemoteProtocolError, match="closed the connection"):
        await client.request("POST", "/report", content=b"{}")
    await client.aclose()
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    client = h1.H1Client(f"http://127.0.0.1:{port}", {}, timeout=5)
    with pytest.raises(httpx.ConnectError):
        await client.request("GET", "/hello")
    with pytest.raises(ValueError, match="plain http:// only"):
        h1.H1Client("https://node:4000", {}, timeout=5)
