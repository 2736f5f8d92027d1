"""``qanat dashboard APP``: serve the dashboard alone, over any storage (the CLI only
declares the options; this is the command's body)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from qanat.dashboard.app import dashboard_app
from qanat.server.auth import check_bind, resolve_token

if TYPE_CHECKING:
    from qanat.queue import Queue


def serve(
    queue: Queue,
    *,
    host: str = "127.0.0.1",
    port: int = 4000,
    token: str | None = None,
    log_level: str = "warning",
) -> None:
    """Serve the dashboard of ``queue`` (as a client: no worker runs here) until Ctrl-C.

    Refuses a non-loopback ``host`` without a token (``--token`` or ``$QANAT_TOKEN``)
    before anything is opened, with ``ConfigurationError`` saying why."""
    token = resolve_token(token)
    check_bind(host, token, what="qanat dashboard")
    asyncio.run(_serve(queue, host, port, token, log_level))


def with_metrics(queue: Queue, token: str | None) -> Starlette:
    """The dashboard at ``/`` and ``/metrics`` (SPEC §14) behind the bearer token."""
    from qanat.observability.exposition import metrics_app
    from qanat.server.app import BearerAuth

    return Starlette(
        routes=[
            Route("/metrics", BearerAuth(metrics_app(queue), token)),
            Mount("/", app=dashboard_app(queue, token=token)),
        ]
    )


async def _serve(queue: Queue, host: str, port: int, token: str | None, log_level: str) -> None:
    await queue.start(worker=False)
    try:
        config = uvicorn.Config(
            with_metrics(queue, token),
            host=host,
            port=port,
            log_level=log_level,
            lifespan="off",
            server_header=False,
        )
        await uvicorn.Server(config).serve()
    finally:
        await queue.stop()
