"""``dashboard_app``: the routes, the template environment and what every page shares."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from qanat.dashboard import actions, pages
from qanat.dashboard.security import CSRF_FIELD, Guard, csrf_of
from qanat.dashboard.timeline import seconds
from qanat.server.auth import resolve_token

if TYPE_CHECKING:
    from qanat.queue import Queue

HERE = Path(__file__).parent


def _when(ts: float | None) -> str:
    if ts is None:
        return "—"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _pretty(text: str | None) -> str:
    """Stored JSON text, indented for reading (as text: the template escapes it)."""
    if text is None:
        return ""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


def environment() -> jinja2.Environment:
    """Jinja2 with autoescape on for every template: everything a job produced is text."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        enable_async=False,
    )
    env.filters["when"] = _when
    env.filters["pretty"] = _pretty
    env.filters["seconds"] = seconds
    env.filters["json"] = lambda v: json.dumps(v, ensure_ascii=False, default=str)
    return env


class Pages:
    """What handlers share: the queue, the templates and how a page is rendered."""

    def __init__(self, queue: Queue, token: str | None) -> None:
        self.queue = queue
        self.token = token
        self.env = environment()

    def render(
        self, request: Request, name: str, status_code: int = 200, **context: Any
    ) -> Response:
        base = request.scope.get("root_path", "")
        html = self.env.get_template(name).render(
            base=base,
            csrf=csrf_of(request),
            csrf_field=CSRF_FIELD,
            nav=name.removesuffix(".html"),
            queue_name=self.queue.name,
            signed_in=self.token is not None,
            flash=request.query_params.get("done"),
            **context,
        )
        return HTMLResponse(html, status_code)

    def message(self, request: Request, status_code: int, title: str, text: str) -> Response:
        """A page saying why a request did nothing."""
        return self.render(request, "message.html", status_code, title=title, message=text)


def dashboard_app(queue: Queue, *, token: str | None = None) -> Starlette:
    """The dashboard over ``queue`` (a client: it need not run a worker) as an ASGI app.

    Mount it in your own app (``Mount("/qanat", dashboard_app(queue, token=...))``) or
    serve it with ``qanat dashboard``. ``token`` (else ``$QANAT_TOKEN``) makes every page
    and call require it; without one, bind it to loopback only (``check_bind``).
    """
    token = resolve_token(token)
    p = Pages(queue, token)
    routes = [
        Route("/", pages.executions(p)),
        Route("/executions/bulk", pages.bulk_confirm(p)),
        Route("/executions/bulk", actions.bulk(p), methods=["POST"]),
        Route("/executions/{id}", pages.execution(p)),
        Route("/executions/{id}/{action}", actions.control(p), methods=["POST"]),
        Route("/jobs", pages.jobs(p)),
        Route("/jobs/{name}/start", actions.start(p), methods=["POST"]),
        Route("/jobs/{name}/{action}", actions.job_pause(p), methods=["POST"]),
        Route("/pipes", pages.pipes(p)),
        Route("/pipes/{name}/send", actions.send(p), methods=["POST"]),
        Route("/cron", pages.cron(p)),
        Route("/workers", pages.workers(p)),
        Route("/charts", pages.charts(p)),
        Route("/signin", pages.signin(p)),
        Route("/favicon.ico", pages.no_icon),
        Route("/signin", actions.signin(p), methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Starlette(routes=routes, middleware=[Middleware(Guard, token=token)])
