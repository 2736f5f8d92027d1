"""The dashboard's pages (GET only: reading never changes anything)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from qanat.dashboard.timeline import gantt, source_of, step_lines
from qanat.execution import APPLIES_TO
from qanat.failures import error_fields
from qanat.queries import make_filter
from qanat.storage.base import STATUSES, LogRecord
from qanat.views import parse_progress

if TYPE_CHECKING:
    from qanat.dashboard.app import Pages

Handler = Callable[[Request], Awaitable[Response]]
PAGE_SIZE = 50
#: The list filters a URL may carry (the names of ``queue.executions.list``'s filters).
FILTER_PARAMS = ("job", "status", "group", "search", "started_after", "started_before")


class BadFilter(ValueError):
    """A filter in the URL that cannot be read; its message names it."""


def _time(name: str, text: str) -> float:
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise BadFilter(
            f"{name}: {text!r} is not a date and time such as 2026-01-31T12:00"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)  # the dashboard shows UTC, so it reads UTC
    return dt.timestamp()


def filters_of(params: Any, storage: Any = None) -> dict[str, Any]:
    """The list filters in a query string or form (empty fields are no filter), checked."""
    out: dict[str, Any] = {}
    for name in FILTER_PARAMS:
        value = (params.get(name) or "").strip()
        if not value:
            continue
        out[name] = _time(name, value) if name.startswith("started_") else value
    try:
        make_filter(**out)
    except (TypeError, ValueError) as exc:
        raise BadFilter(str(exc)) from None
    if "search" in out and not getattr(storage, "searches", False):
        raise BadFilter(f"search: {type(storage).__name__} cannot search executions yet")
    return out


def query_of(filters: dict[str, Any], params: Any) -> dict[str, str]:
    """The filters as they were typed (for links and hidden fields)."""
    return {k: (params.get(k) or "").strip() for k in FILTER_PARAMS if k in filters}


def bulk_of(params: Any, storage: Any) -> tuple[str, dict[str, Any]]:
    """A bulk action and its filters from a query string or form (BadFilter if wrong)."""
    action = str(params.get("action") or "")
    if action not in APPLIES_TO:
        raise BadFilter(f"unknown action {action!r}; actions are: {', '.join(APPLIES_TO)}")
    return action, filters_of(params, storage)


async def count_matching(p: Pages, action: str, filters: dict[str, Any]) -> int:
    """How many executions a bulk action would look at: the matches in the statuses it
    applies to, counted a page of ids at a time (never all rows held at once)."""
    q = p.queue
    await q.ensure_open()
    flt = make_filter(**filters)
    allowed = APPLIES_TO[action]
    statuses = [s for s in (flt.status or allowed) if s in allowed]
    if not statuses:
        return 0
    return await q.storage.count(replace(flt, status=statuses))


def executions(p: Pages) -> Handler:
    async def handler(request: Request) -> Response:
        q = p.queue
        await q.ensure_open()
        params = request.query_params
        error = None
        try:
            filters = filters_of(params, q.storage)
        except BadFilter as exc:
            filters, error = {}, str(exc)
        cursor = params.get("after") or None
        search = filters.get("search")
        if search and cursor is None and await q.storage.get(search) is not None:
            # an execution's id: open it (an index look-up, not a scan of every input)
            return RedirectResponse(
                f"{request.scope.get('root_path', '')}/executions/{search}", 303
            )
        rows: list[Any] = []
        nxt = None
        if error is None:
            try:
                page = await q.storage.query(make_filter(**filters), PAGE_SIZE, cursor)
                rows, nxt = page.items, page.cursor
            except ValueError as exc:
                error = f"bad page cursor: {exc}"
        return p.render(
            request,
            "executions.html",
            status_code=400 if error else 200,
            rows=rows,
            next_cursor=nxt,
            paged=cursor is not None,
            error=error,
            filters=query_of(filters, params),
            jobs=sorted(q.registry),
            statuses=STATUSES,
        )

    return handler


def bulk_confirm(p: Pages) -> Handler:
    """The confirmation of a bulk action, stating how many executions it concerns."""

    async def handler(request: Request) -> Response:
        params = request.query_params
        try:
            action, filters = bulk_of(params, p.queue.storage)
        except BadFilter as exc:
            return p.message(request, 400, "Bulk action", str(exc))
        n = await count_matching(p, action, filters)
        return p.render(
            request,
            "bulk.html",
            action=action,
            count=n,
            filters=query_of(filters, params),
            applies=APPLIES_TO[action],
        )

    return handler


def execution(p: Pages) -> Handler:
    async def handler(request: Request) -> Response:
        q = p.queue
        await q.ensure_open()
        eid = request.path_params["id"]
        rec = await q.storage.get(eid)
        if rec is None:
            return p.message(request, 404, "Not found", f"no execution {eid}")
        steps = await q.storage.steps(eid)
        logs: list[LogRecord] = await q.storage.logs(eid)
        children = (await q.storage.query(make_filter(parent_id=eid), 200, None)).items
        j = q.registry.get(rec.job)
        src = source_of(j.handler, [s.name for s in steps]) if j is not None else None
        chart = gantt(rec, steps, step_lines(src))
        return p.render(
            request,
            "execution.html",
            rec=rec,
            error=error_fields(rec.error) if rec.error else None,
            progress=parse_progress(rec.progress),
            chart=chart,
            source=src,
            logs=logs,
            children=children,
            registered=j is not None,
        )

    return handler


def jobs(p: Pages) -> Handler:
    async def handler(request: Request) -> Response:
        q = p.queue
        counts = await q.monitor.counts()
        paused = await q.paused_jobs()
        return p.render(
            request,
            "jobs.html",
            jobs=[q.registry[n] for n in sorted(q.registry)],
            counts=counts,
            paused=paused,
            statuses=STATUSES,
            options=_options,
        )

    return handler


def _options(j: Any) -> list[tuple[str, str]]:
    """A job's options as (name, value) text pairs for the jobs page."""
    out = [
        ("retry", _text(j.retry)),
        ("backoff", _text(j.backoff)),
        ("timeout", _text(j.timeout) if j.timeout is not None else "none"),
        ("priority", _text(j.priority)),
    ]
    if j.cache is not None:
        out.append(("cache", f"{j.cache:g}s"))
    for name, value in j.flow.options.items():
        out.append((name, _text(value)))
    if j.cron is not None:
        out.append(("cron", f"{', '.join(j.cron.expressions)} ({j.cron.tz})"))
        out.append(("cron missed", j.cron_missed))
    for t in j.triggers:
        out.append(
            (
                "triggered by",
                f"{'pipe' if hasattr(t.source, 'wait_for') else 'job'} {t.source.name}",
            )
        )
    for c in j.cancel_on:
        out.append(("cancelled by", f"pipe {c.pipe.name}"))
    return out


def _text(value: Any) -> str:
    return getattr(value, "__name__", None) or str(value)


def pipes(p: Pages) -> Handler:
    async def handler(request: Request) -> Response:
        q = p.queue
        await q.ensure_open()
        page = await q.storage.events(None, None, 50, None)
        try:
            waiting: list[Any] | None = await q.monitor.waiting()
        except NotImplementedError:
            waiting = None
        return p.render(
            request,
            "pipes.html",
            pipes=[q.pipe_registry[n] for n in sorted(q.pipe_registry)],
            events=page.items,
            waiting=waiting,
        )

    return handler


def cron(p: Pages) -> Handler:
    async def handler(request: Request) -> Response:
        return p.render(request, "cron.html", schedules=await p.queue.monitor.cron())

    return handler


def workers(p: Pages) -> Handler:
    async def handler(request: Request) -> Response:
        try:
            found: list[Any] | None = await p.queue.monitor.workers()
        except NotImplementedError:
            found = None
        return p.render(request, "workers.html", workers=found, lease=p.queue.lease)

    return handler


WINDOWS = {"1h": 3600.0, "6h": 6 * 3600.0, "24h": 86400.0, "7d": 7 * 86400.0}


def charts(p: Pages) -> Handler:
    async def handler(request: Request) -> Response:
        window = request.query_params.get("window", "1h")
        span = WINDOWS.get(window, 3600.0)
        until = p.queue.clock()
        tp = await p.queue.monitor.throughput(until - span, until, 24)
        peak = max([1] + [max(v) for per in tp.series.values() for v in per.values()])
        return p.render(
            request, "charts.html", tp=tp, peak=peak, window=window, windows=list(WINDOWS)
        )

    return handler


def signin(p: Pages) -> Handler:
    async def handler(request: Request) -> Response:
        return p.render(
            request, "signin.html", next=request.query_params.get("next", "/"), wrong=False
        )

    return handler


async def no_icon(request: Request) -> Response:
    """No favicon (a browser asks for one on every page; a 404 would be logged)."""
    return Response(status_code=204)
