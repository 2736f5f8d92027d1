"""The dashboard's state changes: POST only, and only past the guard's origin and CSRF
checks (``qanat.dashboard.security``). Each goes through the same client method the CLI
and the API use; the answer is a redirect (post/redirect/get) back to a page saying
what happened."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import pydantic
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from qanat.dashboard.pages import BadFilter, bulk_of, query_of
from qanat.dashboard.security import set_session
from qanat.errors import PayloadTooLarge
from qanat.execution import ACTIONS
from qanat.server.auth import token_matches

if TYPE_CHECKING:
    from qanat.dashboard.app import Pages

Handler = Callable[[Request], Awaitable[Response]]
#: What a bad JSON input or event raises: refused with its message, nothing stored.
BAD_INPUT = (ValueError, TypeError, pydantic.ValidationError, PayloadTooLarge)


def _back(request: Request, path: str, done: str, **query: str) -> Response:
    base = request.scope.get("root_path", "")
    params = urlencode({**query, "done": done})
    return RedirectResponse(f"{base}{path}?{params}", 303)


def _json_object(text: str, what: str) -> Any:
    try:
        return json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} is not valid JSON: {exc}") from None


def control(p: Pages) -> Handler:
    """Cancel, pause, resume or retry one execution."""

    async def handler(request: Request) -> Response:
        eid, action = request.path_params["id"], request.path_params["action"]
        if action not in ACTIONS:
            return p.message(request, 404, "Unknown action", f"no action {action!r}")
        h = await p.queue.executions.get(eid)
        if h is None:
            return p.message(request, 404, "Not found", f"no execution {eid}")
        form = await request.form()
        reason = str(form.get("reason") or "") or "cancelled from the dashboard"
        done = await h.control(action, reason if action == "cancel" else None)
        text = f"{action}: {done.refused}" if done.refused else f"{action}: now {done.status}"
        return _back(request, f"/executions/{eid}", text)

    return handler


def bulk(p: Pages) -> Handler:
    """A confirmed bulk action on every execution matching the list's filters."""

    async def handler(request: Request) -> Response:
        form = await request.form()
        try:
            action, filters = bulk_of(form, p.queue.storage)
        except BadFilter as exc:
            return p.message(request, 400, "Bulk action", str(exc))
        ex = p.queue.executions
        method = {"cancel": ex.cancel, "pause": ex.pause, "resume": ex.resume, "retry": ex.retry}
        kw: dict[str, Any] = (
            {"reason": "cancelled from the dashboard"} if action == "cancel" else {}
        )
        n = await method[action](**kw, **filters)
        return _back(request, "/", f"{action}: {n} execution(s) changed", **query_of(filters, form))

    return handler


def start(p: Pages) -> Handler:
    """Start an execution of a job with a JSON object as its input."""

    async def handler(request: Request) -> Response:
        j = p.queue.registry.get(request.path_params["name"])
        if j is None:
            return p.message(request, 404, "Not found", "no such job")
        form = await request.form()
        try:
            data = _json_object(str(form.get("input") or ""), "the input")
            if not isinstance(data, dict):
                raise ValueError(f"the input must be a JSON object of {j.name}'s fields")
            h = await p.queue.start_execution(j, (), data, {})
        except BAD_INPUT as exc:
            return p.message(request, 400, f"Start {j.name}", f"not started: {exc}")
        return _back(request, f"/executions/{h.id}", f"started {j.name}")

    return handler


def job_pause(p: Pages) -> Handler:
    """Hold (pause) or release (resume) a whole job on every worker."""

    async def handler(request: Request) -> Response:
        name, action = request.path_params["name"], request.path_params["action"]
        if name not in p.queue.registry or action not in ("pause", "resume"):
            return p.message(request, 404, "Not found", "no such job action")
        await p.queue.pause_job(name, action == "pause")
        return _back(request, "/jobs", f"job {name}: {action}d")

    return handler


def send(p: Pages) -> Handler:
    """Send an event on a pipe (human in the loop)."""

    async def handler(request: Request) -> Response:
        pipe = p.queue.pipe_registry.get(request.path_params["name"])
        if pipe is None:
            return p.message(request, 404, "Not found", "no such pipe")
        form = await request.form()
        try:
            data = _json_object(str(form.get("data") or ""), "the event data")
            e = await p.queue.send_event(pipe, data)
        except BAD_INPUT as exc:
            return p.message(request, 400, f"Send on {pipe.name}", f"not sent: {exc}")
        woke = f", woke {len(e.woke)}" if e.woke else ""
        return _back(
            request, "/pipes", f"sent {e.id} on {pipe.name}: triggered {len(e.executions)}{woke}"
        )

    return handler


def signin(p: Pages) -> Handler:
    """The sign-in form's answer: the session cookie for the right token."""

    async def handler(request: Request) -> Response:
        form = await request.form()
        nxt = str(form.get("next") or "/")
        if not nxt.startswith("/") or nxt[1:2] in ("/", "\\"):
            nxt = "/"  # never an open redirect to another site (//host, /\\host)
        if p.token is None:
            return RedirectResponse(nxt, 303)
        if not token_matches(str(form.get("token") or ""), p.token):
            return p.render(request, "signin.html", 401, next=nxt, wrong=True)
        response = RedirectResponse(nxt, 303)
        set_session(response, request, p.token)
        return response

    return handler
