"""``qanat serve``: the orchestration node on uvicorn (the command's body; ``cli.py``
only declares its options).

The node binds loopback unless it has a token (``auth.check_bind``), serves TLS when
given a certificate and key, and stops gracefully on SIGTERM/SIGINT: open long polls
are answered at once, requests in flight finish, then storage is closed. It keeps
nothing a restart would lose (see ``qanat.server.node``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from qanat.errors import ConfigurationError
from qanat.server.app import build_app
from qanat.server.auth import check_bind, resolve_token
from qanat.server.node import Node
from qanat.storage.http.tokens import TOKEN_ENV

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from qanat.queue import Queue

log = logging.getLogger("qanat.node")

#: Seconds a stopping node lets requests in flight finish.
GRACE = 10.0


def extra_routes(queue: Queue, token: str | None) -> Sequence[tuple[str, ASGIApp]]:
    """The apps mounted beside ``/node`` and ``/api``, behind the bearer token: ``/metrics``
    (SPEC §14)."""
    from qanat.observability.exposition import metrics_app

    return (("/metrics", metrics_app(queue)),)


def check_tls(certfile: str | None, keyfile: str | None) -> None:
    """Both or neither of --ssl-certfile and --ssl-keyfile."""
    if bool(certfile) != bool(keyfile):
        given, other = (
            ("--ssl-certfile", "--ssl-keyfile")
            if certfile
            else (
                "--ssl-keyfile",
                "--ssl-certfile",
            )
        )
        raise ConfigurationError(f"qanat serve: {given} needs {other} too (TLS takes both)")


def serve(
    queue: Queue,
    *,
    host: str = "127.0.0.1",
    port: int = 4000,
    token: str | None = None,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    log_level: str = "info",
    echo: Any = print,
) -> None:
    """Run the node over ``queue``'s storage until SIGTERM/SIGINT.

    ``ConfigurationError`` (before binding anything) for a non-loopback ``host``
    without a token (``token`` or ``$QANAT_TOKEN``) or half a TLS configuration."""
    import uvicorn

    token = resolve_token(token)
    check_bind(host, token)
    check_tls(ssl_certfile, ssl_keyfile)
    logging.basicConfig(
        level=log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    node = Node(queue)
    from qanat.dashboard import dashboard_app

    app = build_app(
        queue,
        token=token,
        extra_routes=extra_routes(queue, token),
        dashboard=dashboard_app(queue, token=token),
        node=node,
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        log_level=log_level.lower(),
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=int(GRACE),
        http="auto",  # httptools when installed (the server extra), else h11
        loop="auto",  # uvloop when installed
    )
    scheme = "https" if ssl_certfile else "http"
    auth = "with a bearer token" if token else f"without a token (loopback only; {TOKEN_ENV})"
    echo(f"qanat node on {scheme}://{host}:{port} {auth}, storage {queue.storage!r}")
    _Server(config, node).run()


class _Server:
    """uvicorn's server, also answering the node's open long polls when told to stop
    (they would otherwise hold the graceful shutdown for up to 25 s)."""

    def __init__(self, config: Any, node: Node) -> None:
        import uvicorn

        node_ = node

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                # uvicorn's own re-raises the signal after the shutdown (exit status
                # 143): a graceful stop exits 0 here, as ``qanat worker`` does
                if threading.current_thread() is not threading.main_thread():
                    yield
                    return
                sigs = (signal.SIGINT, signal.SIGTERM)
                before = {sig: signal.signal(sig, self.handle_exit) for sig in sigs}
                try:
                    yield
                finally:
                    for sig, handler in before.items():
                        signal.signal(sig, handler)

            def handle_exit(self, sig: int, frame: FrameType | None) -> None:
                super().handle_exit(sig, frame)
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:
                    return
                loop.call_soon_threadsafe(node_.stop_watches)

        self._server = Server(config)

    def run(self) -> None:
        self._server.run()
