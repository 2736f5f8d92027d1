"""Reading the queue's history: ``queue.executions`` (get, list, first, and the bulk
actions over the same filters) and ``queue.events`` (the log of sent events)."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from qanat.durations import to_timestamp
from qanat.execution import Execution, apply_matching
from qanat.pipe import Pipe
from qanat.storage.base import STATUSES, ExecutionFilter
from qanat.views import EventInfo, event_info

if TYPE_CHECKING:
    from qanat.queue import Queue


def _paged(
    fetch: Callable[[int, str | None], Awaitable[Any]],
) -> Callable[[int | None, int], AsyncIterator[Any]]:
    """Rows of a storage listing (``fetch(size, cursor)`` returning a page with ``items``
    and ``cursor``), at most ``limit``, read ``page_size`` at a time."""

    async def rows(limit: int | None, page_size: int) -> AsyncIterator[Any]:
        cursor: str | None = None
        left = limit
        while left is None or left > 0:
            page = await fetch(page_size if left is None else min(page_size, left), cursor)
            for item in page.items:
                yield item
            if left is not None:
                left -= len(page.items)
            if page.cursor is None:
                return
            cursor = page.cursor

    return rows


class Events:
    """``queue.events``: the log of events sent on pipes."""

    def __init__(self, queue: Queue) -> None:
        self._queue = queue

    async def list(
        self,
        *,
        pipe: str | Pipe[Any] | None = None,
        since: datetime | float | None = None,
        limit: int | None = None,
        page_size: int = 200,
    ) -> AsyncIterator[EventInfo]:
        """Sent events (of ``pipe``, sent at or after ``since``), newest first, each with
        the ids of the executions it triggered and its failed triggers; fetched from
        storage a page at a time."""
        q = self._queue
        await q.ensure_open()
        name = pipe.name if isinstance(pipe, Pipe) else pipe
        after = _ts(since, "since")
        pages = _paged(lambda size, cursor: q.storage.events(name, after, size, cursor))
        async for rec in pages(limit, page_size):
            yield event_info(q.pipe_registry.get(rec.pipe), rec)

    async def page(
        self, *, pipe: str | Pipe[Any] | None = None, limit: int = 50, cursor: str | None = None
    ) -> tuple[builtins.list[EventInfo], str | None]:
        """One page of sent events (of ``pipe``), newest first, and the cursor of the next
        page (None at the end): for callers that page across requests (the HTTP API).

        Raises ``ValueError`` for a ``cursor`` that no earlier page returned.
        """
        q = self._queue
        _check_limit(limit)
        await q.ensure_open()
        name = pipe.name if isinstance(pipe, Pipe) else pipe
        got = await q.storage.events(name, None, limit, cursor)
        return [event_info(q.pipe_registry.get(r.pipe), r) for r in got.items], got.cursor


class Executions:
    """``queue.executions``: look up and list executions."""

    def __init__(self, queue: Queue) -> None:
        self._queue = queue

    async def get(self, execution_id: str) -> Execution | None:
        """The execution with this id (with ``.info`` filled in), or None."""
        await self._queue.ensure_open()
        rec = await self._queue.storage.get(execution_id)
        return None if rec is None else self._queue.handle(rec)

    async def list(
        self, *, limit: int | None = None, page_size: int = 200, **filters: Any
    ) -> AsyncIterator[Execution]:
        """Matching executions, newest first, fetched from storage a page at a time.

        Filters: ``job``, ``status``, ``group``, ``started_before``, ``started_after``,
        ``completed_before``, ``completed_after``, ``attempts``, ``attempts_lt``,
        ``attempts_gt``, ``parent_id`` and ``search`` (an execution id, or text found in
        the input's JSON).
        """
        await self._queue.ensure_open()
        flt = make_filter(**filters)
        check_search(self._queue.storage, flt)
        pages = _paged(lambda size, cursor: self._queue.storage.query(flt, size, cursor))
        async for rec in pages(limit, page_size):
            yield self._queue.handle(rec)

    async def page(
        self, *, limit: int = 50, cursor: str | None = None, **filters: Any
    ) -> tuple[builtins.list[Execution], str | None]:
        """One page of matching executions (the filters of ``list``), newest first, and
        the cursor of the next page (None at the end): for callers that page across
        requests (the HTTP API, the dashboard).

        Raises ``ValueError`` for a ``cursor`` that no earlier page returned.
        """
        flt = make_filter(**filters)
        _check_limit(limit)
        await self._queue.ensure_open()
        got = await self._queue.storage.query(flt, limit, cursor)
        return [self._queue.handle(r) for r in got.items], got.cursor

    async def first(self, **filters: Any) -> Execution | None:
        """The newest matching execution, or None."""
        async for e in self.list(limit=1, **filters):
            return e
        return None

    # Bulk actions: the filters of ``list``; the rules of each action are those of the
    # ``Execution`` handle (``qanat.execution.refusal``). Each returns how many changed.

    async def cancel(
        self, *, reason: str | None = None, page_size: int = 200, **filters: Any
    ) -> int:
        """Cancel every matching live execution (and its live children); how many."""
        return await self._apply("cancel", reason, page_size, filters)

    async def pause(self, *, page_size: int = 200, **filters: Any) -> int:
        """Pause every matching live execution (running ones at their next step boundary)."""
        return await self._apply("pause", None, page_size, filters)

    async def resume(self, *, page_size: int = 200, **filters: Any) -> int:
        """Resume every matching paused execution (and drop pending pause requests)."""
        return await self._apply("resume", None, page_size, filters)

    async def retry(self, *, page_size: int = 200, **filters: Any) -> int:
        """Run every matching failed or cancelled execution again from the start."""
        return await self._apply("retry", None, page_size, filters)

    async def _apply(
        self, action: str, reason: str | None, page_size: int, filters: dict[str, Any]
    ) -> int:
        flt = make_filter(**filters)
        if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
            raise ValueError(f"page_size must be an int >= 1, got {page_size!r}")
        await self._queue.ensure_open()
        check_search(self._queue.storage, flt)
        return await apply_matching(self._queue, action, flt, reason, page_size)


def _check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be an int >= 1, got {limit!r}")


def _ts(value: datetime | float | None, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return to_timestamp(value)
    if isinstance(value, int | float):
        return float(value)
    raise TypeError(f"{name} must be a timezone-aware datetime, got {value!r}")


def _names(value: str | Iterable[str] | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


def check_search(storage: Any, flt: ExecutionFilter) -> None:
    """Refuse a ``search`` on a storage that cannot honour it (it would match everything)."""
    if flt.search is not None and not getattr(storage, "searches", False):
        raise NotImplementedError(f"{type(storage).__name__} cannot search executions yet")


def make_filter(**f: Any) -> ExecutionFilter:
    """An ``ExecutionFilter`` from keyword filters, checking names and statuses."""
    allowed = {
        "job",
        "status",
        "group",
        "started_before",
        "started_after",
        "completed_before",
        "completed_after",
        "attempts",
        "attempts_lt",
        "attempts_gt",
        "parent_id",
        "search",
    }
    unknown = set(f) - allowed
    if unknown:
        raise TypeError(
            f"unknown execution filter {sorted(unknown)[0]!r}; "
            f"filters are: {', '.join(sorted(allowed))}"
        )
    status = _names(f.get("status"))
    for s in status or ():
        if s not in STATUSES:
            raise ValueError(f"unknown status {s!r}; statuses are: {', '.join(STATUSES)}")
    return ExecutionFilter(
        job=_names(f.get("job")),
        status=status,
        group=f.get("group"),
        parent_id=f.get("parent_id"),
        started_before=_ts(f.get("started_before"), "started_before"),
        started_after=_ts(f.get("started_after"), "started_after"),
        completed_before=_ts(f.get("completed_before"), "completed_before"),
        completed_after=_ts(f.get("completed_after"), "completed_after"),
        attempts=f.get("attempts"),
        attempts_lt=f.get("attempts_lt"),
        attempts_gt=f.get("attempts_gt"),
        search=_search(f.get("search")),
    )


def _search(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise TypeError(f"search must be a string (an id or text of the input), got {value!r}")
    return value
