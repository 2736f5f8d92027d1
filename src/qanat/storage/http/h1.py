"""A small HTTP/1.1 client for the node protocol over plain ``http://``.

Workers and clients of a node send many small requests, one after another, over
keep-alive connections to one host. httpx (with httpcore and anyio under it) spends
about 2,500 Python function calls on each of them: on the 2-core machine of
``benchmarks/node.py`` that was 2.1 ms of the client's CPU per request against 0.5 ms
for ``http.client``, and the node's latency and step rates are sums of such round
trips. This client does only what the protocol needs: one request written in one
``write``, a status line, headers and a ``Content-Length`` (or chunked) body, keep-alive
connections in a pool. TLS (``https://``) and in-process test transports stay on httpx.

Its failures are httpx's exception classes, so ``Transport``'s retry rules (what may
have been sent, what was not) read the same for both.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from typing import Any

import httpx

#: A connection idle this long is closed rather than reused: uvicorn closes idle
#: keep-alive connections after 5 s, and a request written into one that the server is
#: closing fails as "maybe sent".
IDLE_EXPIRY = 4.0
#: The most bytes of a status line or one header line.
LINE_LIMIT = 65536


class Response:
    """What ``Transport`` reads of an answer (the names httpx's ``Response`` uses)."""

    def __init__(self, status_code: int, reason: str, headers: dict[str, str], content: bytes,
                 path: str) -> None:  # fmt: skip
        self.status_code = status_code
        self.reason_phrase = reason
        self.headers = headers
        self.content = content
        self.path = path

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = time.monotonic()

    def usable(self) -> bool:
        return (
            not self.reader.at_eof()
            and not self.writer.is_closing()
            and time.monotonic() - self.idle_since < IDLE_EXPIRY
        )

    def close(self) -> None:
        self.writer.close()


class H1Client:
    """Keep-alive HTTP/1.1 connections to one ``http://host:port`` base URL."""

    def __init__(self, base_url: str, headers: dict[str, str], *, timeout: float,
                 connect_timeout: float = 5.0, max_connections: int = 32) -> None:  # fmt: skip
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"H1Client speaks plain http:// only, not {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/")
        host_header = self.host if parts.port is None else f"{self.host}:{parts.port}"
        fixed = {"host": host_header, **{k.lower(): v for k, v in headers.items()}}
        self._fixed = "".join(f"{k}: {v}\r\n" for k, v in fixed.items())
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(max_connections)

    async def request(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Response:
        """Send one request and read its answer. Raises ``httpx.ConnectError`` when no
        connection could be made (nothing sent), ``httpx.ReadTimeout`` after
        ``timeout`` seconds, ``httpx.RemoteProtocolError`` or ``httpx.ReadError`` when the
        connection broke with the request perhaps sent."""
        target = self.prefix + path
        head = [f"{method} {target} HTTP/1.1\r\n", self._fixed]
        for k, v in (headers or {}).items():
            head.append(f"{k}: {v}\r\n")
        body = content or b""
        if content is not None or method in ("POST", "PUT", "PATCH"):
            head.append(f"content-type: application/json\r\ncontent-length: {len(body)}\r\n")
        head.append("\r\n")
        data = "".join(head).encode("latin-1") + body
        limit = self.timeout if timeout is None else timeout
        async with self._slots:
            conn = await self._connection()
            try:
                async with asyncio.timeout(limit):
                    conn.writer.write(data)
                    await conn.writer.drain()
                    response, keep = await _read_response(conn.reader, method, target)
            except TimeoutError:
                conn.close()
                raise httpx.ReadTimeout(f"no answer to {method} {target} in {limit:g}s") from None
            except (ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
                conn.close()
                raise httpx.ReadError(f"{method} {target}: {exc or type(exc).__name__}") from exc
            except BaseException:
                conn.close()  # cancelled mid-request: the connection's state is unknown
                raise
            if keep:
                conn.idle_since = time.monotonic()
                self._idle.append(conn)
            else:
                conn.close()
            return response

    async def _connection(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if conn.usable():
                return conn
            conn.close()
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(
                    self.host, self.port, limit=LINE_LIMIT
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(
                f"connecting to {self.host}:{self.port} took over {self.connect_timeout:g}s"
            ) from None
        except OSError as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        return _Connection(reader, writer)

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


async def _read_response(
    reader: asyncio.StreamReader, method: str, target: str
) -> tuple[Response, bool]:
    line = await reader.readline()
    if not line:
        raise httpx.RemoteProtocolError(f"{method} {target}: the node closed the connection")
    try:
        version, code, *reason = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        status = int(code)
    except ValueError:
        raise httpx.RemoteProtocolError(f"{method} {target}: bad status line {line!r}") from None
    headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n"):
            break
        if not line:
            raise httpx.RemoteProtocolError(f"{method} {target}: headers cut short")
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size_line = await reader.readline()
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise httpx.RemoteProtocolError(
                    f"{method} {target}: bad chunk size {size_line!r}"
                ) from None
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                break
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(chunks)
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        body = b""
    else:  # delimited by the end of the connection
        body = await reader.read()
        headers["connection"] = "close"
    keep = headers.get("connection", "").lower() != "close" and version == "HTTP/1.1"
    return Response(status, reason[0] if reason else "", headers, body, target), keep


def uses_h1(url: str, transport: Any) -> bool:
    """Whether a node URL is served by ``H1Client`` (plain http, no test transport)."""
    return transport is None and url.startswith("http://")
