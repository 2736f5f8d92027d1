"""``qanat worker --metrics-port P``: ``GET /metrics`` served from inside the worker.

A small HTTP/1.1 server on the worker's own event loop (no thread, no extra package
beyond prometheus-client): one request per connection, ``GET``/``HEAD /metrics`` only,
the same exposition as :func:`qanat.observability.metrics.metrics_app`. It binds
127.0.0.1 unless given a token (the rule of :mod:`qanat.server.auth`); with a token
every request needs ``Authorization: Bearer <token>``.

With ``--processes N`` the supervisor binds the port once (:func:`listen`) and hands
the listening socket to its children, with a fresh ``$QANAT_METRICS_DIR``
(:class:`SupervisedMetrics`) where each child writes a snapshot of its counters every
second: the kernel gives each connection to one child, and any child answers with
every child's counters summed, so the port shows one view.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Mapping
from typing import TYPE_CHECKING

from qanat.errors import ConfigurationError
from qanat.observability.exposition import Exposition, answer
from qanat.observability.metrics import DIR_ENV, FLUSH_EVERY
from qanat.server.auth import bearer, check_bind, token_matches

if TYPE_CHECKING:
    from qanat.queue import Queue

log = logging.getLogger("qanat")

#: In a supervised child: the file descriptor of the listening socket it inherited.
FD_ENV = "QANAT_METRICS_FD"
#: A request head larger than this is refused (431); a slow one is dropped after
#: READ_TIMEOUT seconds, so a client cannot hold the worker's connections open.
MAX_HEAD = 16 * 1024
READ_TIMEOUT = 10.0
REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}


def listen(host: str, port: int, token: str | None) -> socket.socket:
    """A listening TCP socket on ``host:port``, after the bind rule; a clear error when
    the port is taken."""
    check_bind(host, token, what="qanat worker --metrics-port")
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
    except OSError as exc:
        raise ConfigurationError(
            f"qanat worker --metrics-port: cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None
    sock.setblocking(False)
    return sock


class MetricsServer:
    """The worker's metrics endpoint on ``sock`` (from :func:`listen`, or inherited)."""

    def __init__(self, expo: Exposition, sock: socket.socket, token: str | None) -> None:
        self.expo = expo
        self.sock = sock
        self.token = token
        self._server: asyncio.Server | None = None
        self._flusher: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The port it listens on (the one chosen by the system for port 0)."""
        return int(self.sock.getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, sock=self.sock, limit=MAX_HEAD)
        if os.environ.get(DIR_ENV):  # a supervised child: its siblings read its snapshot
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_EVERY)
            try:
                self.expo.metrics.flush()
            except OSError as exc:
                log.warning("qanat: writing the metrics snapshot failed: %s", exc)

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            with contextlib.suppress(OSError):
                self.expo.metrics.flush()  # what it counted last stays in the sum
            self._flusher = None
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, body, ctype, head = await self._answer(reader)
            extra = b"WWW-Authenticate: Bearer\r\n" if status == 401 else b""
            if status == 405:
                extra += b"Allow: GET, HEAD\r\n"
            writer.write(
                f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
                f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Cache-Control: no-store\r\nConnection: close\r\n".encode()
                + extra
                + b"\r\n"
                + (b"" if head else body)
            )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[int, bytes, str, bool]:
        text = "text/plain; charset=utf-8"
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
        except TimeoutError:
            return 408, b"request timeout\n", text, False
        except asyncio.LimitOverrunError:
            return 431, b"request head too large\n", text, False
        lines = raw.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return 400, b"bad request line\n", text, False
        method, target = parts[0], parts[1]
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        head = method == "HEAD"
        if self.token is not None and not token_matches(
            bearer(headers.get("authorization")), self.token
        ):
            return 401, b"unauthorized: send Authorization: Bearer <token>\n", text, head
        try:
            status, body, ctype = await answer(self.expo, method, target.partition("?")[0])
        except Exception:
            log.exception("qanat: rendering /metrics failed")
            return 500, b"rendering the metrics failed; see the worker's log\n", text, head
        return status, body, ctype, head


async def serve_worker_metrics(
    queue: Queue, host: str, port: int, token: str | None
) -> MetricsServer:
    """Turn metrics on for ``queue`` and serve them: on the socket the supervisor handed
    down (``$QANAT_METRICS_FD``), else on a socket of our own at ``host:port``."""
    inherited = os.environ.get(FD_ENV)
    if inherited:
        sock = socket.socket(fileno=int(inherited))
        sock.setblocking(False)
    else:
        sock = listen(host, port, token)
    server = MetricsServer(Exposition(queue), sock, token)
    await server.start()
    return server


class SupervisedMetrics:
    """The supervisor's share of ``--metrics-port`` with ``--processes N``: one listening
    socket and one fresh snapshot directory for all its children, removed at the end.

    Use as a context manager around ``Supervisor.run``; :attr:`env` goes into the
    children's environment and :attr:`fds` is what they must inherit.
    """

    def __init__(self, host: str, port: int, token: str | None) -> None:
        self.sock = listen(host, port, token)
        self.dir = tempfile.mkdtemp(prefix="qanat-metrics-")
        self.env: Mapping[str, str] = {
            DIR_ENV: self.dir,
            FD_ENV: str(self.sock.fileno()),
        }
        self.fds = (self.sock.fileno(),)

    @property
    def port(self) -> int:
        """The port bound (the one chosen by the system for port 0)."""
        return int(self.sock.getsockname()[1])

    def __enter__(self) -> SupervisedMetrics:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)
