"""The node's ASGI app: the worker protocol at ``/node``, the public API at ``/api``,
and whatever else the caller mounts (the dashboard at ``/``, ``/metrics``), all behind
one bearer token."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from qanat.server.api import api_app
from qanat.server.auth import bearer, token_matches
from qanat.server.node import Node
from qanat.storage.http import wire

if TYPE_CHECKING:
    from qanat.queue import Queue


class BearerAuth:
    """Every HTTP request must carry ``Authorization: Bearer <token>`` (compared in
    constant time); without it: ``401`` with a JSON ``{"error": ...}``. The token is
    never read from the URL. No token configured: everything passes (loopback only,
    see ``auth.check_bind``)."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token is None or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header = None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        if token_matches(bearer(header), self.token):
            await self.app(scope, receive, send)
            return
        why = "missing" if header is None else "wrong"
        body = wire.dumps({"error": f"unauthorized: {why} bearer token (Authorization: Bearer)"})
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="qanat"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def build_app(
    queue: Queue,
    *,
    token: str | None,
    extra_mounts: Sequence[tuple[str, ASGIApp]] = (),
    node: Node | None = None,
) -> Starlette:
    """The node's app over ``queue``'s storage: ``/node/v1/...`` (workers, clients),
    ``/api`` (SPEC §13), then ``extra_mounts`` as ``(path, app)``, every request behind
    ``token`` (None: no auth, loopback only). The queue's storage is opened at start-up
    (or on the first request, under a test transport that runs no lifespan) and closed
    at shutdown."""
    node = node or Node(queue)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await node.start()
        try:
            yield
        finally:
            await node.stop()

    routes: list[BaseRoute] = [
        Mount("/node/v1", routes=node.routes()),
        Mount("/api", app=api_app(queue)),
    ]
    routes += [Mount(path, app=app) for path, app in extra_mounts]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.node = node
    app.add_middleware(BearerAuth, token=token)
    return app
