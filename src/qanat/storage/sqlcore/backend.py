"""``SqlStorage``: the storage contract over the shared SQL operations.

Every method queues one operation (a function of a connection, in the modules of this
package) on the writer thread (``_w``) or the reader thread (``_r``) and awaits it; a
backend (``SqliteStorage``, ``PostgresStorage``) only opens the connections, owns the
schema and says how the database is watched. Semantics are those of
:class:`qanat.storage.memory.MemoryStorage`; ``tests/contract`` checks every backend.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from qanat.errors import StorageError
from qanat.storage.base import (
    Checkpoint,
    EventPage,
    EventRecord,
    ExecutionFilter,
    ExecutionRecord,
    Finish,
    LogRecord,
    Page,
    Stats,
    StepRecord,
    Storage,
    TriggerFailure,
    Waiter,
    WaitState,
    WorkerRecord,
    decode_cursor,
    now,
)
from qanat.storage.sqlcore import (
    claims,
    control,
    events,
    executions,
    flow,
    pipes,
    queries,
    steps,
)
from qanat.storage.sqlcore.writer import Accepts, Bulk, ConnThread, OneStatement

T = TypeVar("T")

#: Operations that have a one-statement form for a run of them in a batch.
BULK: dict[Callable[..., Any], Bulk] = {
    executions.op_enqueue: executions.bulk_enqueue,
    executions.op_finish: executions.bulk_finish,
    steps.op_checkpoint: steps.bulk_checkpoint,
    pipes.op_send: pipes.bulk_send,
}
#: Reads that have a one-statement form for a run of them (the reader's batches).
READ_BULK: dict[Callable[..., Any], Bulk] = {queries.op_get: queries.bulk_get}

#: Reads small enough to run on the caller's thread when the reader is idle (SQLite;
#: see ``ConnThread.inline_reads``): an indexed probe, one row, a few rows by id.
INLINE_MANY = 64
INLINE_READS: dict[Callable[..., Any], Accepts] = {
    claims.op_has_ready: lambda jobs, at: True,
    queries.op_get: lambda execution_id: True,
    queries.op_get_many: lambda ids, payloads: len(ids) <= INLINE_MANY,
    queries.op_finished_among: lambda ids: len(ids) <= INLINE_MANY,
}

#: Operations that are a single statement for some arguments (see ``ConnThread.single``):
#: an enqueue of one record without key or flow control; a checkpoint without children
#: where the dialect writes it as one statement.
ONE_STATEMENT: dict[Callable[..., Any], OneStatement] = {
    executions.op_enqueue: executions.one_plain_record,
    steps.op_checkpoint: steps.one_statement_checkpoint,
}


#: Operations whose commit need not wake this process's own listeners (``ConnThread.quiet``):
#: a checkpoint without children changes no execution's state or claimability; whoever
#: in this process waits on it is woken by the engine directly. Nor does storing
#: executions this process's worker adopted (an enqueue, a checkpoint's children): they
#: run here already, so its claim loop would find nothing and its watcher no finish.
QUIET_FOR_OTHERS: dict[Callable[..., Any], Callable[..., bool]] = {
    steps.op_checkpoint: steps.quiet_checkpoint,
    executions.op_enqueue: executions.claimed_by_enqueuer,
}
#: ... nor a worker's final finish that wakes nobody else (``executions.quiet_finish``):
#: the worker resolves this process's waits on it. Not in a node (``serves_others``),
#: whose listeners answer the long polls of the workers and clients it serves.
QUIET = {**QUIET_FOR_OTHERS, executions.op_finish: executions.quiet_finish}


class SqlStorage(Storage):
    """The contract's methods, each one operation on the writer or reader thread."""

    searches = True

    #: set by ``open``: the threads running the operations
    _writer: ConnThread | None = None
    _reader: ConnThread | None = None

    def _closed(self) -> StorageError:
        return StorageError(f"{self!r} is not open")

    def _w(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        if self._writer is None:
            raise self._closed()
        return self._writer.submit(fn, args)

    def _r(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        if self._reader is None:
            raise self._closed()
        return self._reader.submit(fn, args)

    # --- queue ------------------------------------------------------------------------

    async def enqueue(self, records: Sequence[ExecutionRecord]) -> list[ExecutionRecord]:
        if not records:
            return []
        return await self._w(executions.op_enqueue, list(records))

    async def claim(
        self, owner: str, jobs: Sequence[str], limit: int, lease: float, at: float | None = None
    ) -> list[ExecutionRecord]:
        taken, self.next_wake = await self._w(claims.op_claim, owner, list(jobs), limit, lease, at)
        return taken

    async def has_ready(self, jobs: Sequence[str], at: float) -> bool:
        found: bool = await self._r(claims.op_has_ready, list(jobs), at)
        return found

    async def renew(
        self, owner: str, ids: Sequence[str], lease: float, at: float | None = None
    ) -> dict[str, str]:
        if not ids:
            return {}
        return await self._w(claims.op_renew, owner, list(ids), lease, at)

    async def checkpoint(self, execution_id: str, owner: str, cp: Checkpoint) -> str | None:
        return await self._w(steps.op_checkpoint, execution_id, owner, cp)

    async def finish(self, execution_id: str, owner: str, fin: Finish) -> bool:
        if fin.children or fin.failures:
            return await self._w(executions.op_finish_triggers, execution_id, owner, fin)
        return await self._w(executions.op_finish, execution_id, owner, fin)

    async def suspend(
        self, execution_id: str, owner: str, status: str, available_at: float | None
    ) -> bool:
        return await self._w(executions.op_suspend, execution_id, owner, status, available_at)

    async def mark(self, execution_id: str, owner: str, status: str) -> bool:
        result: bool = await self._w(executions.op_mark, execution_id, owner, status)
        return result

    async def release(self, owner: str, ids: Sequence[str]) -> None:
        if ids:
            await self._w(executions.op_release, owner, list(ids))

    async def enter_step(self, execution_id: str, owner: str, key: str) -> bool:
        return await self._w(executions.op_enter_step, execution_id, owner, key)

    # --- flow control -------------------------------------------------------------

    async def refill(self, at: float | None = None) -> int:
        return await self._w(flow.op_refill, at)

    async def acquire_step(
        self, name: str, holder: str, owner: str, limit: int, lease: float, at: float | None = None
    ) -> bool:
        return await self._w(flow.op_acquire_step, name, holder, owner, limit, lease, at)

    async def release_step(self, name: str, holder: str) -> None:
        await self._w(flow.op_release_step, name, holder)

    # --- control ----------------------------------------------------------------------

    async def cancel(self, ids: Sequence[str], reason: str | None) -> list[ExecutionRecord]:
        if not ids:
            return []
        return await self._w(control.op_cancel, list(ids), reason)

    async def pause(self, execution_id: str) -> str | None:
        return await self._w(control.op_pause, execution_id)

    async def resume(self, execution_id: str) -> str | None:
        return await self._w(control.op_resume, execution_id)

    async def restart(self, execution_id: str, at: float) -> ExecutionRecord | None:
        return await self._w(control.op_restart, execution_id, at)

    async def pause_job(self, job: str, paused: bool) -> bool:
        return await self._w(control.op_pause_job, job, paused, now())

    async def paused_jobs(self) -> builtins.set[str]:
        return await self._r(queries.op_paused_jobs)

    async def wake(self, ids: Sequence[str], at: float) -> None:
        if ids:
            await self._w(control.op_wake, list(ids), at)

    # --- reading ----------------------------------------------------------------------

    async def get(self, execution_id: str) -> ExecutionRecord | None:
        return await self._r(queries.op_get, execution_id)

    async def get_many(self, ids: Sequence[str], *, payloads: bool = True) -> list[ExecutionRecord]:
        if not ids:
            return []
        return await self._r(queries.op_get_many, list(ids), payloads)

    async def finished_among(self, ids: Sequence[str]) -> builtins.list[ExecutionRecord]:
        if not ids:
            return []
        return await self._r(queries.op_finished_among, list(ids))

    async def query(self, flt: ExecutionFilter, limit: int, cursor: str | None) -> Page:
        if cursor is not None:
            decode_cursor(cursor)  # a bad cursor is the caller's error, raised here
        return await self._r(queries.op_list, flt, limit, cursor)

    async def find_cached(self, job: str, input: str, since: float) -> ExecutionRecord | None:
        return await self._r(queries.op_find_cached, job, input, since)

    async def steps(self, execution_id: str) -> builtins.list[StepRecord]:
        return await self._r(steps.op_steps, execution_id)

    async def stats(self) -> Stats:
        return await self._r(queries.op_stats)

    # --- progress and logs --------------------------------------------------------------

    async def set_progress(self, execution_id: str, owner: str | None, progress: str) -> bool:
        return await self._w(executions.op_progress, execution_id, owner, progress)

    async def append_logs(self, owner: str | None, logs: Sequence[LogRecord]) -> int:
        if not logs:
            return 0
        return await self._w(executions.op_logs, owner, list(logs))

    async def logs(self, execution_id: str) -> builtins.list[LogRecord]:
        return await self._r(steps.op_read_logs, execution_id)

    # --- housekeeping -----------------------------------------------------------------------

    async def register_worker(self, worker_id: str, host: str, pid: int, at: float) -> None:
        await self._w(executions.op_register, worker_id, host, pid, at)

    async def unregister_worker(self, worker_id: str) -> None:
        await self._w(executions.op_unregister, worker_id)

    async def workers(self, host: str) -> builtins.list[tuple[str, int]]:
        return await self._r(queries.op_workers, host)

    async def count(self, flt: ExecutionFilter) -> int:
        return await self._r(queries.op_count, flt)

    async def status_counts(self) -> dict[str, dict[str, int]]:
        return await self._r(queries.op_status_counts)

    async def worker_list(self) -> builtins.list[WorkerRecord]:
        return await self._r(queries.op_worker_list)

    async def expire_owner(self, owner: str, at: float | None = None) -> int:
        return await self._w(executions.op_expire, owner, at)

    async def purge(self, status: str, before: float | None, keep: int | None) -> int:
        return await self._w(queries.op_purge, status, before, keep)

    # --- events (pipes) -----------------------------------------------------------------

    async def send(
        self,
        event: EventRecord,
        executions: Sequence[ExecutionRecord],
        failures: Sequence[TriggerFailure],
    ) -> EventRecord:
        return await self._w(pipes.op_send, event, list(executions), list(failures))

    async def events(
        self, pipe: str | None, since: float | None, limit: int, cursor: str | None
    ) -> EventPage:
        if cursor is not None:
            decode_cursor(cursor)  # a bad cursor is the caller's error, raised here
        return await self._r(events.op_events, pipe, since, limit, cursor)

    async def trigger_failures(self, source: str) -> builtins.list[TriggerFailure]:
        return await self._r(events.op_trigger_failures, source)

    async def purge_events(self, before: float | None, keep: int | None) -> int:
        return await self._w(events.op_purge_events, before, keep)

    # --- waiting (pipe.wait_for) ---------------------------------------------------------

    async def wait(
        self,
        execution_id: str,
        owner: str,
        waiter: Waiter,
        pokes: int | None,
        at: float | None = None,
    ) -> WaitState:
        return await self._w(pipes.op_wait, execution_id, owner, waiter, pokes, at)

    async def end_wait(self, execution_id: str, owner: str, cp: Checkpoint) -> str | None:
        return await self._w(pipes.op_end_wait, execution_id, owner, cp)

    async def waiter(self, execution_id: str, key: str) -> Waiter | None:
        return await self._r(events.op_waiter, execution_id, key)

    async def open_waiters(self, pipe: str | None, limit: int) -> builtins.list[Waiter]:
        return await self._r(events.op_open_waiters, pipe, limit)

    async def awaited(self, prefix: str) -> set[str]:
        return await self._r(events.op_awaited, prefix)
