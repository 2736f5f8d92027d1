"""The public HTTP API of SPEC §13, served under ``/api`` by ``qanat serve``.

Every route calls the client methods the CLI calls (``queue.start_execution``,
``queue.executions.get/page``, ``Execution.control``, ``queue.send_event``,
``queue.events.page``, ``queue.stats``): what may be done to which execution, what input
a job takes and how big a payload may be are decided there, never here. This module
only turns HTTP into those calls and their outcomes (or refusals) into JSON:
``{"error": "<sentence>"}`` with ``400`` (not JSON, wrong shape), ``404`` (unknown job,
pipe or id), ``409`` (the status does not allow it), ``413`` (over ``max_payload``) or
``422`` (the job's or pipe's validation). A refused request stores nothing: validation
happens before the client writes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import orjson
import pydantic
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from qanat.errors import PayloadTooLarge, UnknownJob, UnknownPipe
from qanat.server.api_models import (
    CancelRequest,
    EventPage,
    EventsQuery,
    ExecutionDetail,
    ExecutionOut,
    ExecutionPage,
    ExecutionsQuery,
    Health,
    NoBody,
    SendRequest,
    SendResult,
    StartRequest,
    StatsOut,
)
from qanat.server.api_openapi import Operation, Typed, openapi_document
from qanat.server.api_views import event_out, execution_detail, execution_out
from qanat.server.auth import bearer, token_matches

if TYPE_CHECKING:
    from qanat.execution import Execution
    from qanat.queue import Queue
    from qanat.storage.base import ExecutionRecord

log = logging.getLogger("qanat.server")

M = TypeVar("M", bound=BaseModel)

#: How much a request body may exceed ``max_payload``: the envelope around the payload
#: (``{"input": ...}``, options) and JSON spelt differently from how it is stored.
ENVELOPE = 64 * 1024
#: How long ``/health`` waits for storage before answering 503.
HEALTH_TIMEOUT = 5.0
#: The reason recorded on an execution cancelled through the API.
CANCEL_REASON = "cancelled through the HTTP API"


class ApiError(Exception):
    """A refused request: the status and the sentence of ``{"error": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _json(model: BaseModel, status: int = 200) -> Response:
    return Response(model.model_dump_json(), status, media_type="application/json")


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    """``{"error": message}`` with ``status``."""
    return Response(
        orjson.dumps({"error": message}), status, headers, media_type="application/json"
    )


def describe(exc: pydantic.ValidationError, where: str) -> str:
    """pydantic's errors as one sentence naming each field: ``body field 'priority':
    Input should be a valid integer``."""
    parts = []
    for err in exc.errors(include_url=False):
        # "status", not "status.0": a query parameter's values are one parameter.
        path = err["loc"]
        if where.startswith("query") and path and isinstance(path[-1], int):
            path = path[:-1]
        loc = ".".join(str(p) for p in path)
        msg = err["msg"].removeprefix("Value error, ")  # our own validators' sentences
        value = err.get("input")
        if (
            err["type"] != "missing"
            and isinstance(value, str | int | float)
            and len(str(value)) < 80
        ):
            msg += f" (got {value!r})"
        parts.append(f"{where} {loc!r}: {msg}" if loc else f"{where}: {msg}")
    return "; ".join(parts)


# --- reading requests ------------------------------------------------------------------


async def read_json(request: Request, limit: int) -> Any:
    """The request's body as JSON (None when it is empty), read at most ``limit`` bytes.

    A non-empty body must be declared JSON (or declare nothing): HTML forms cannot send
    ``application/json``, so a page elsewhere cannot post a body here through a browser
    without the preflight this server never answers."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body is {int(declared):,} bytes, over {_limit(limit)}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the request body is over {_limit(limit)}")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return None
    ctype = request.headers.get("content-type")
    if ctype:
        media = ctype.split(";", 1)[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            raise ApiError(
                415, f"the body must be JSON sent as Content-Type: application/json, not {media}"
            )
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"the body is not JSON: {exc}") from None


def _limit(limit: int) -> str:
    return f"the limit of {limit:,} bytes (Queue(max_payload=) plus {ENVELOPE // 1024} KB)"


def parse_body(model: type[M], data: Any) -> M:
    """``data`` validated as ``model`` (an empty body as ``{}``), or a 400 naming the field."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ApiError(400, f"the body must be a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ApiError(400, describe(exc, "body field")) from None


def parse_query(model: type[M], request: Request, lists: tuple[str, ...] = ()) -> M:
    """The query string validated as ``model``; ``lists`` name the parameters that may
    repeat (``status=failed&status=cancelled``) or hold commas (``status=failed,cancelled``)."""
    params: dict[str, Any] = {}
    for name in request.query_params:
        values = request.query_params.getlist(name)
        if name in lists:
            params[name] = [v for value in values for v in value.split(",") if v]
        elif len(values) > 1:
            raise ApiError(400, f"query parameter {name!r} is given {len(values)} times")
        else:
            params[name] = values[0]
    try:
        return model.model_validate(params)
    except pydantic.ValidationError as exc:
        raise ApiError(400, describe(exc, "query parameter")) from None


def _same_origin(request: Request) -> bool:
    """Whether a browser sent this from a page of this server (scripts send no Origin).

    A state change from another origin is refused: without a token the API trusts
    whoever reaches it, and a web page must not steer it through the user's browser."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc.lower() == request.headers.get("host", "").lower()


# --- the app ---------------------------------------------------------------------------


class _Api:
    """The route handlers over one queue."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self.body_limit = queue.max_payload + ENVELOPE
        self.docs: dict[str, bytes] = {}

    # executions

    async def start(self, request: Request) -> Response:
        j = self.queue.jobs[request.path_params["job"]]
        body = parse_body(StartRequest, await read_json(request, self.body_limit))
        try:
            h = await self.queue.start_execution(j, (), body.input, body.options())
        except pydantic.ValidationError as exc:
            raise ApiError(
                422, f"invalid input for job {j.name!r}: {describe(exc, 'field')}"
            ) from None
        except PayloadTooLarge:
            raise
        except (TypeError, ValueError) as exc:  # call options the job refused (delay and run_at)
            raise ApiError(400, f"invalid call of job {j.name!r}: {exc}") from None
        assert h.info is not None
        return _json(execution_out(h.info), 201)

    async def list_executions(self, request: Request) -> Response:
        q = parse_query(ExecutionsQuery, request, lists=("job", "status"))
        for name in q.job or ():
            self.queue.jobs[name]  # an unknown job is a 404, not an empty list
        filters = {k: v for k, v in (("job", q.job), ("status", q.status), ("group", q.group)) if v}
        try:
            page, nxt = await self.queue.executions.page(limit=q.limit, cursor=q.cursor, **filters)
        except ValueError as exc:
            raise ApiError(400, f"query parameter 'cursor': {exc}") from None
        items = [execution_out(e.info) for e in page if e.info is not None]
        return _json(ExecutionPage(items=items, next=nxt))

    async def _execution(self, execution_id: str) -> tuple[Execution, ExecutionRecord]:
        h = await self.queue.executions.get(execution_id)
        if h is None or h.info is None:
            raise ApiError(404, f"no execution with id {execution_id!r}")
        return h, h.info

    async def get_execution(self, request: Request) -> Response:
        h, rec = await self._execution(request.path_params["id"])
        steps, logs = await h.steps(), await h.logs()
        return _json(execution_detail(rec, steps, logs))

    def control(self, action: str) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            data = await read_json(request, self.body_limit)
            reason = None
            if action == "cancel":
                reason = parse_body(CancelRequest, data).reason or CANCEL_REASON
            else:
                parse_body(NoBody, data)
            h, _ = await self._execution(request.path_params["id"])
            done = await h.control(action, reason)
            if done.status is None:  # removed meanwhile (retention)
                raise ApiError(404, f"no execution with id {h.id!r}")
            if done.refused is not None:
                raise ApiError(409, f"cannot {action}: {done.refused}")
            _, after = await self._execution(h.id)
            return _json(execution_out(after))

        return handler

    # pipes and events

    async def send(self, request: Request) -> Response:
        pipe = self.queue.pipes[request.path_params["pipe"]]
        body = parse_body(SendRequest, await read_json(request, self.body_limit))
        try:
            e = await self.queue.send_event(pipe, body.data)
        except pydantic.ValidationError as exc:
            raise ApiError(
                422, f"invalid data for pipe {pipe.name!r}: {describe(exc, 'field')}"
            ) from None
        except PayloadTooLarge:
            raise
        except TypeError as exc:
            raise ApiError(422, f"invalid data for pipe {pipe.name!r}: {exc}") from None
        return _json(SendResult(id=e.id, started=e.executions, woken=e.woke), 201)

    async def list_events(self, request: Request) -> Response:
        q = parse_query(EventsQuery, request)
        if q.pipe is not None:
            self.queue.pipes[q.pipe]  # an unknown pipe is a 404, not an empty list
        try:
            page, nxt = await self.queue.events.page(pipe=q.pipe, limit=q.limit, cursor=q.cursor)
        except ValueError as exc:
            raise ApiError(400, f"query parameter 'cursor': {exc}") from None
        return _json(EventPage(items=[event_out(e) for e in page], next=nxt))

    # the rest

    async def stats(self, request: Request) -> Response:
        return _json(StatsOut.model_validate(await self.queue.stats()))

    async def health(self, request: Request) -> Response:
        try:
            await asyncio.wait_for(self._ping(), HEALTH_TIMEOUT)
        except Exception as exc:
            what = str(exc).splitlines()[0] if str(exc) else "no answer"
            return error_response(503, f"storage does not answer: {type(exc).__name__}: {what}")
        return _json(Health(status="ok"))

    async def _ping(self) -> None:
        # A real read (a lookup by primary key of an id that is never made): a backend's
        # now() may come from this host's clock without asking the database.
        await self.queue.ensure_open()
        await self.queue.storage.now()
        await self.queue.storage.get("health-check")

    async def openapi(self, request: Request) -> Response:
        root = request.scope.get("root_path", "")
        doc = self.docs.get(root)
        if doc is None:
            q = self.queue
            typed = (
                Typed("/jobs/{job}/start", "job", "input",
                      {j.name: j.input_schema for j in q.jobs}),
                Typed("/pipes/{pipe}/send", "pipe", "data",
                      {p.name: p.data_schema for p in q.pipes}),
            )  # fmt: skip
            doc = self.docs[root] = orjson.dumps(
                openapi_document(
                    OPERATIONS, title="qanat", version=_version(), server_url=root, typed=typed
                )
            )
        return Response(doc, media_type="application/json")


def _version() -> str:
    try:
        return version("qanat")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0"


_ID = (("id", "The execution's id."),)
_CONTROL = {
    "cancel": "Cancel it (and its live children); a body may give the reason.",
    "pause": "Pause it at its next step boundary.",
    "resume": "Resume a paused execution.",
    "retry": "Run a failed or cancelled execution again from the start.",
}

#: Every route of the API: the router is built from this table, and so is the document.
OPERATIONS: tuple[Operation, ...] = (
    Operation("POST", "/jobs/{job}/start", "start", "Start an execution of a job.",
              ExecutionOut, 201, StartRequest, False,
              params=(("job", "The job's name."),), errors=(400, 403, 404, 413, 415, 422)),
    Operation("GET", "/executions", "list_executions", "Executions, newest first.",
              ExecutionPage, query=ExecutionsQuery, errors=(400, 404)),
    Operation("GET", "/executions/{id}", "get_execution",
              "One execution with its steps, progress and logs.",
              ExecutionDetail, params=_ID, errors=(404,)),
    *(
        Operation("POST", f"/executions/{{id}}/{action}", action, summary, ExecutionOut,
                  body=CancelRequest if action == "cancel" else NoBody, body_required=False,
                  params=_ID, errors=(400, 403, 404, 409, 413, 415))
        for action, summary in _CONTROL.items()
    ),
    Operation("POST", "/pipes/{pipe}/send", "send",
              "Send an event: it starts the jobs the pipe triggers and wakes its waiters.",
              SendResult, 201, SendRequest,
              params=(("pipe", "The pipe's name."),), errors=(400, 403, 404, 413, 415, 422)),
    Operation("GET", "/events", "list_events", "Sent events, newest first.",
              EventPage, query=EventsQuery, errors=(400, 404)),
    Operation("GET", "/stats", "stats", "What queue.stats() returns.", StatsOut),
    Operation("GET", "/health", "health", "200 when storage answers, else 503.",
              Health, errors=(503,)),
)  # fmt: skip


def _endpoint(
    fn: Callable[[Request], Awaitable[Response]], state_changing: bool, takes_query: bool
) -> Callable[[Request], Awaitable[Response]]:
    """``fn`` with the API's refusals turned into ``{"error": ...}`` answers."""

    async def endpoint(request: Request) -> Response:
        if state_changing and not _same_origin(request):
            return error_response(403, "cross-origin request refused: a state change must "
                                  "come from this server's own pages or from a script")  # fmt: skip
        if not takes_query and request.query_params:
            name = next(iter(request.query_params))
            return error_response(
                400, f"{request.url.path} takes no query parameters (got {name!r})"
            )
        try:
            return await fn(request)
        except ApiError as exc:
            return error_response(exc.status, exc.message)
        except (UnknownJob, UnknownPipe) as exc:
            return error_response(404, str(exc))
        except PayloadTooLarge as exc:
            return error_response(413, str(exc))
        except Exception:
            log.exception("qanat: %s %s failed", request.method, request.url.path)
            return error_response(500, "internal error: the server logged what went wrong")

    return endpoint


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(404, f"no such route: {request.method} {request.url.path}")
    return error_response(
        exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", exc.headers
    )


class BearerAuth:
    """Refuse every request without ``Authorization: Bearer <token>`` (``401``)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = None
            for name, value in scope["headers"]:
                if name == b"authorization":
                    given = bearer(value.decode("latin-1"))
            if not token_matches(given, self.token):
                why = "no bearer token" if given is None else "a wrong bearer token"
                response = error_response(
                    401,
                    f"this server requires a token: the request carried {why} "
                    "(send Authorization: Bearer <token>)",
                    {"WWW-Authenticate": 'Bearer realm="qanat"'},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def api_app(queue: Queue, token: str | None = None) -> Starlette:
    """The API as an ASGI app over ``queue`` (a started client), to mount at ``/api``.

    ``qanat serve`` wraps it in its own auth; ``token`` makes the app itself require
    ``Authorization: Bearer <token>`` on every route, for mounting it alone.
    """
    api = _Api(queue)
    handlers: dict[str, Callable[[Request], Awaitable[Response]]] = {
        "start": api.start,
        "list_executions": api.list_executions,
        "get_execution": api.get_execution,
        **{action: api.control(action) for action in _CONTROL},
        "send": api.send,
        "list_events": api.list_events,
        "stats": api.stats,
        "health": api.health,
    }
    routes = [
        Route(
            op.path,
            _endpoint(handlers[op.name], op.method == "POST", op.query is not None),
            methods=[op.method],
        )
        for op in OPERATIONS
    ]
    routes.append(Route("/openapi.json", _endpoint(api.openapi, False, False), methods=["GET"]))
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    if token is not None:
        app.add_middleware(BearerAuth, token=token)
    return app
