"""The public HTTP API of SPEC §13, served under ``/api`` (placeholder: health only;
the routes of §13 are being built on the ``api`` branch)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

if TYPE_CHECKING:
    from qanat.queue import Queue


def api_app(queue: Queue) -> Starlette:
    """The API as an ASGI app over ``queue`` (a started client), to mount at ``/api``."""

    async def health(request: Request) -> JSONResponse:
        await queue.storage.now()
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/health", health)])
