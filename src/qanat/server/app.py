"""The node's ASGI app: the worker protocol at ``/node``, the public API at ``/api``,
and whatever else the caller mounts (``/metrics``), each behind one bearer token; and
the dashboard at ``/``, which checks the same token its own way (a sign-in form and a
cookie for browsers, or the bearer header; see ``qanat.dashboard.security``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from qanat.server.api import api_app
from qanat.server.auth import bearer, token_matches
from qanat.server.node import Node
from qanat.storage.http import wire
from qanat.storage.http.protocol import PREFIX

NODE_PREFIX = PREFIX + "/"

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
    extra_routes: Sequence[tuple[str, ASGIApp]] = (),
    dashboard: ASGIApp | None = None,
    node: Node | None = None,
) -> Starlette:
    """The node's app over ``queue``'s storage: ``/node/v1/...`` (workers, clients),
    ``/api`` (SPEC §13), then ``extra_routes`` as ``(path, app)`` (one path each), every
    request behind ``token`` (None: no auth, loopback only); ``dashboard`` last at ``/``,
    guarding itself with the same token. The queue's storage is opened at start-up (or on
    the first request, under a test transport that runs no lifespan) and closed at
    shutdown."""
    node = node or Node(queue)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await node.start()
        try:
            yield
        finally:
            await node.stop()

    routes: list[BaseRoute] = [
        Mount("/api", app=BearerAuth(api_app(queue), token)),
    ]
    routes += [Route(path, BearerAuth(app, token)) for path, app in extra_routes]
    if dashboard is not None:
        routes.append(Mount("/", app=dashboard))
    app = NodeFirst(BearerAuth(node.asgi(), token), routes=routes, lifespan=lifespan)
    app.state.node = node
    return app


class NodeFirst(Starlette):
    """Starlette, with the node's worker protocol (``/node/v1/...``) answered ahead of
    its router and middleware: those routes carry every worker's and client's requests,
    and answer their own errors (``Node.guarded``)."""

    def __init__(self, node_app: ASGIApp, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.node_app = node_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(NODE_PREFIX):
            scope["app"] = self
            await self.node_app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)
