"""In-process storage: fast, for tests and throwaway queues. Nothing survives the process."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace

from qanat.storage.base import (
    CANCELLED,
    COMPLETED,
    FAILED,
    FINISHED_STATUSES,
    LIVE_STATUSES,
    PAUSED,
    PENDING,
    RUNNING,
    STATUSES,
    WAITING,
    Checkpoint,
    EventRecord,
    ExecutionFilter,
    ExecutionRecord,
    Finish,
    LogRecord,
    Page,
    Stats,
    StepRecord,
    Storage,
    WorkerRecord,
    decode_cursor,
    encode_cursor,
    now,
)
from qanat.storage.flow import FlowSpec, admit
from qanat.storage.memory_flow import MemoryFlow
from qanat.storage.memory_pipes import MemoryPipes
from qanat.storage.stats import runtime_stats

DEADLINE_ERROR = json.dumps(
    {"type": "Timeout", "module": "qanat.errors", "message": "deadline passed before it finished"}
)


class MemoryStorage(MemoryPipes, Storage):
    """Keeps everything in dictionaries of this process (``memory://``)."""

    polls = False

    searches = True

    def __init__(self) -> None:
        self._execs: dict[str, ExecutionRecord] = {}
        self._keys: dict[tuple[str, str], str] = {}
        self._steps: dict[str, dict[str, StepRecord]] = {}
        self._logs: dict[str, list[LogRecord]] = {}
        self._workers: dict[str, tuple[str, int, float]] = {}
        self._init_pipes()
        self._version = 0
        self._seen = -1
        self._flow = MemoryFlow(self)
        self._paused_jobs: set[str] = set()

    def _touch(self) -> None:
        self._version += 1

    async def changed(self) -> bool:
        seen, self._seen = self._seen, self._version
        return seen != self._version

    # --- queue ------------------------------------------------------------------

    def _insert(self, rec: ExecutionRecord) -> ExecutionRecord:
        if rec.key is not None:
            existing = self._keys.get((rec.job, rec.key))
            if existing is not None and existing in self._execs:
                return self._execs[existing].copy()
        if rec.flow is not None:
            flow = rec.flow
            rec = rec.copy()
            instead = admit(self._flow, rec, FlowSpec.load(flow))
            if instead is not None:
                return instead
        if rec.key is not None:
            self._keys[(rec.job, rec.key)] = rec.id
        self._execs[rec.id] = rec.copy()
        return rec.copy()

    async def enqueue(self, records: Sequence[ExecutionRecord]) -> list[ExecutionRecord]:
        out = [self._insert(r) for r in records]
        self._touch()
        return out

    async def claim(
        self, owner: str, jobs: Sequence[str], limit: int, lease: float, at: float | None = None
    ) -> list[ExecutionRecord]:
        at = now() if at is None else at
        wanted = set(jobs) - self._paused_jobs
        self._flow.open_due(at)
        ready = [
            e
            for e in self._execs.values()
            if e.job in wanted
            and e.status in (PENDING, RUNNING, WAITING)
            and e.available_at is not None
            and e.available_at <= at
        ]
        ready.sort(key=lambda e: (-e.priority, e.available_at or 0.0, e.id))
        taken: list[ExecutionRecord] = []
        for e in ready:
            if len(taken) >= limit:
                break
            if e.deadline is not None and e.deadline <= at:
                self._final(e, FAILED, None, DEADLINE_ERROR, at, None)
                continue
            if e.flow is not None and not self._flow.admit_claim(e, at):
                continue
            if e.owner is not None:  # taken from a worker that never let it go
                e.recoveries += 1
            e.status = RUNNING
            e.owner = owner
            e.available_at = at + lease
            e.claims += 1
            if e.started_at is None:
                e.started_at = at
            taken.append(e.copy())
        self.next_wake = min(self._flow.wake.values(), default=None)
        self._touch()
        return taken

    def _stop_reason(self, e: ExecutionRecord | None, owner: str) -> str | None:
        if e is None or e.owner != owner:
            return "lost"
        if e.status == CANCELLED:
            return "cancelled"
        if e.status in FINISHED_STATUSES or e.status not in (RUNNING, WAITING):
            return "lost"
        if e.pause_requested:
            return "paused"
        return None

    async def renew(
        self, owner: str, ids: Sequence[str], lease: float, at: float | None = None
    ) -> dict[str, str]:
        until = (now() if at is None else at) + lease
        self._flow.renew_steps(owner, until)
        stops: dict[str, str] = {}
        for i in ids:
            e = self._execs.get(i)
            why = self._stop_reason(e, owner)
            if why is not None:
                stops[i] = why
            elif e is not None:
                e.available_at = until
        return stops

    async def checkpoint(self, execution_id: str, owner: str, cp: Checkpoint) -> str | None:
        e = self._execs.get(execution_id)
        why = self._stop_reason(e, owner)
        if why is not None and why != "paused":
            return why
        self._steps.setdefault(execution_id, {})[cp.step.key] = cp.step
        if e is not None and e.recoveries:
            e.recoveries = 0
            e.step_in_flight = None
        for child in cp.children:  # a retried checkpoint stores its children once
            if child.id not in self._execs:
                self._insert(child)
        self._touch()
        return why

    def _final(
        self,
        e: ExecutionRecord,
        status: str,
        output: str | None,
        error: str | None,
        at: float,
        reason: str | None,
    ) -> None:
        if e.status in (RUNNING, WAITING) and e.gate is None:
            self._flow.freed([e.slot])
        e.gate = None
        e.status = status
        e.output = output
        e.error = error
        e.reason = reason
        e.owner = None
        e.available_at = None
        e.completed_at = at
        e.pause_requested = False
        if e.parent_id is not None:
            parent = self._execs.get(e.parent_id)
            if parent is not None and parent.status == WAITING and parent.owner is None:
                if parent.available_at is None or parent.available_at > at:
                    parent.available_at = at

    async def finish(self, execution_id: str, owner: str, fin: Finish) -> bool:
        e = self._execs.get(execution_id)
        if e is None or e.owner != owner or e.status not in (RUNNING, WAITING):
            return False
        at = now()
        if fin.status == PENDING:
            self._flow.freed([e.slot])
            e.status = PENDING
            e.owner = None
            e.error = fin.error
            e.attempt = fin.attempt or e.attempt + 1
            e.available_at = fin.available_at if fin.available_at is not None else at
            e.run_at = e.available_at
            e.recoveries = 0
            e.step_in_flight = None
        else:
            self._final(e, fin.status, fin.output, fin.error, at, fin.reason)
            if fin.status == COMPLETED:
                for child in fin.children:
                    self._insert(child)
                for f in fin.failures:
                    self._failures.setdefault(f.source, []).append(replace(f))
                ev = fin.event
                if ev is not None and ev.id not in self._events and self._has_waiters(ev.pipe):
                    self._events[ev.id] = EventRecord(
                        ev.id, ev.pipe, ev.data, ev.sent_at, ev.source
                    )
                    self._serve_waiters(self._events[ev.id])
        for line in fin.logs:
            self._logs.setdefault(line.execution_id, []).append(replace(line))
        self._touch()
        return True

    async def suspend(
        self, execution_id: str, owner: str, status: str, available_at: float | None
    ) -> bool:
        e = self._execs.get(execution_id)
        if e is None or e.owner != owner or e.status not in (RUNNING, WAITING):
            return False
        if e.pause_requested:
            status = PAUSED
        self._flow.freed([e.slot])
        e.status = status
        e.owner = None
        e.pause_requested = False
        e.available_at = None if status == PAUSED else available_at
        self._touch()
        return True

    async def mark(self, execution_id: str, owner: str, status: str) -> bool:
        e = self._execs.get(execution_id)
        if e is None or e.owner != owner or e.status not in (RUNNING, WAITING):
            return False
        if status == RUNNING and not self._flow.allows_running(e):
            return False
        if status == WAITING:
            self._flow.freed([e.slot])
        e.status = status
        self._touch()
        return True

    async def enter_step(self, execution_id: str, owner: str, key: str) -> bool:
        e = self._execs.get(execution_id)
        if not self._owns(e, owner):
            return False
        assert e is not None
        e.step_in_flight = key
        self._touch()
        return True

    @staticmethod
    def _owns(e: ExecutionRecord | None, owner: str) -> bool:
        """Whether a worker write of ``owner`` may touch ``e``."""
        return e is not None and e.owner == owner and e.status in (RUNNING, WAITING)

    async def release(self, owner: str, ids: Sequence[str]) -> None:
        at = now()
        for i in ids:
            e = self._execs.get(i)
            if e is not None and e.owner == owner and e.status in (RUNNING, WAITING):
                self._flow.freed([e.slot])
                e.owner = None
                e.status = PENDING
                e.available_at = at
        self._touch()

    # --- flow control -----------------------------------------------------------

    async def refill(self, at: float | None = None) -> int:
        n = self._flow.refill(now() if at is None else at)
        self._touch()
        return n

    async def acquire_step(
        self, name: str, holder: str, owner: str, limit: int, lease: float, at: float | None = None
    ) -> bool:
        at = now() if at is None else at
        ok = self._flow.acquire_step(name, holder, owner, limit, at + lease, at)
        self._touch()
        return ok

    async def release_step(self, name: str, holder: str) -> None:
        self._flow.release_step(name, holder)
        self._touch()

    # --- control ----------------------------------------------------------------

    async def cancel(self, ids: Sequence[str], reason: str | None) -> list[ExecutionRecord]:
        out = self._cancel(ids, reason)
        self._touch()
        return out

    def _cancel(self, ids: Sequence[str], reason: str | None) -> list[ExecutionRecord]:
        at = now()
        out: list[ExecutionRecord] = []
        todo = list(ids)
        while todo:
            e = self._execs.get(todo.pop())
            if e is None or e.status not in LIVE_STATUSES:
                continue
            before = e.copy()
            owner = e.owner
            self._final(e, CANCELLED, None, None, at, reason)
            e.owner = owner  # the owner notices through renew/checkpoint
            out.append(before)
            todo.extend(c.id for c in self._execs.values() if c.parent_id == e.id)
        return out

    async def pause(self, execution_id: str) -> str | None:
        e = self._execs.get(execution_id)
        if e is None:
            return None
        if e.status == PENDING or (e.status == WAITING and e.owner is None):
            e.status = PAUSED
            e.available_at = None
            e.gate = None
        elif e.status in (RUNNING, WAITING):
            e.pause_requested = True
        self._touch()
        return e.status

    async def resume(self, execution_id: str) -> str | None:
        e = self._execs.get(execution_id)
        if e is None:
            return None
        if e.status == PAUSED:
            e.status = PENDING
            e.available_at = now()
        e.pause_requested = False
        self._touch()
        return e.status

    async def restart(self, execution_id: str, at: float) -> ExecutionRecord | None:
        e = self._execs.get(execution_id)
        if e is None or e.status not in (FAILED, CANCELLED):
            return None
        e.status = PENDING
        e.attempt = 1
        e.owner = None
        e.output = e.error = e.reason = e.progress = None
        e.started_at = e.completed_at = None
        e.available_at = at
        e.run_at = at
        e.claims = e.recoveries = 0
        e.step_in_flight = None
        self._steps.pop(execution_id, None)
        self._logs.pop(execution_id, None)
        self._drop_waiters(execution_id)
        self._touch()
        return e.copy()

    async def pause_job(self, job: str, paused: bool) -> bool:
        if (job in self._paused_jobs) == paused:
            return False
        if paused:
            self._paused_jobs.add(job)
        else:
            self._paused_jobs.discard(job)
        self._touch()
        return True

    async def paused_jobs(self) -> set[str]:
        return set(self._paused_jobs)

    async def wake(self, ids: Sequence[str], at: float) -> None:
        for i in ids:
            e = self._execs.get(i)
            if e is not None and e.status == WAITING and e.owner is None:
                e.available_at = at
        self._touch()

    # --- reading ----------------------------------------------------------------

    async def get(self, execution_id: str) -> ExecutionRecord | None:
        e = self._execs.get(execution_id)
        return e.copy() if e is not None else None

    async def get_many(self, ids: Sequence[str], *, payloads: bool = True) -> list[ExecutionRecord]:
        return [e.copy() for i in ids if (e := self._execs.get(i)) is not None]

    async def query(self, flt: ExecutionFilter, limit: int, cursor: str | None) -> Page:
        rows = [e for e in self._execs.values() if matches(e, flt)]
        rows.sort(key=lambda e: (e.created_at, e.id), reverse=True)
        if cursor is not None:
            at, ident = decode_cursor(cursor)
            rows = [e for e in rows if (e.created_at, e.id) < (at, ident)]
        page = [e.copy() for e in rows[:limit]]
        more = len(rows) > limit
        nxt = encode_cursor(page[-1].created_at, page[-1].id) if more and page else None
        return Page(page, nxt)

    async def find_cached(self, job: str, input: str, since: float) -> ExecutionRecord | None:
        best: ExecutionRecord | None = None
        for e in self._execs.values():
            if e.job == job and e.status == COMPLETED and e.input == input:
                if (e.completed_at or 0) >= since and (
                    best is None or (e.completed_at or 0) > (best.completed_at or 0)
                ):
                    best = e
        return best.copy() if best else None

    async def steps(self, execution_id: str) -> list[StepRecord]:
        steps = list(self._steps.get(execution_id, {}).values())
        steps.sort(key=lambda s: s.started_at)
        return steps

    async def stats(self) -> Stats:
        by_status = dict.fromkeys(STATUSES, 0)
        by_job: dict[str, dict[str, int]] = {}
        retries = 0
        runtimes: list[float] = []
        for e in self._execs.values():
            by_status[e.status] += 1
            per = by_job.setdefault(e.job, {})
            per[e.status] = per.get(e.status, 0) + 1
            retries += e.attempt - 1
            if e.status == COMPLETED and e.started_at is not None and e.completed_at is not None:
                runtimes.append(e.completed_at - e.started_at)
        mean, p95 = runtime_stats(runtimes)
        return Stats(by_status, by_job, retries, mean, p95)

    # --- progress and logs ------------------------------------------------------

    async def set_progress(self, execution_id: str, owner: str | None, progress: str) -> bool:
        e = self._execs.get(execution_id)
        if e is None or (owner is not None and not self._owns(e, owner)):
            return False
        e.progress = progress
        self._touch()
        return True

    async def append_logs(self, owner: str | None, logs: Sequence[LogRecord]) -> int:
        n = 0
        for line in logs:
            if owner is None or self._owns(self._execs.get(line.execution_id), owner):
                self._logs.setdefault(line.execution_id, []).append(replace(line))
                n += 1
        self._touch()
        return n

    async def logs(self, execution_id: str) -> list[LogRecord]:
        return list(self._logs.get(execution_id, []))

    # --- housekeeping -------------------------------------------------------------

    async def register_worker(self, worker_id: str, host: str, pid: int, at: float) -> None:
        self._workers[worker_id] = (host, pid, at)

    async def unregister_worker(self, worker_id: str) -> None:
        self._workers.pop(worker_id, None)

    async def workers(self, host: str) -> list[tuple[str, int]]:
        return [(w, pid) for w, (h, pid, _) in self._workers.items() if h == host]

    async def worker_list(self) -> list[WorkerRecord]:
        found = {w: WorkerRecord(w, h, pid, at) for w, (h, pid, at) in self._workers.items()}
        for e in self._execs.values():
            rec = found.get(e.owner or "")
            if rec is not None and e.status in (RUNNING, WAITING):
                rec.held.append(e.id)
                if e.available_at is not None:
                    rec.lease_until = max(rec.lease_until or 0.0, e.available_at)
        return list(found.values())

    async def expire_owner(self, owner: str, at: float | None = None) -> int:
        at = now() if at is None else at
        n = 0
        for e in self._execs.values():
            if e.owner == owner and e.status in (RUNNING, WAITING):
                e.available_at = at
                n += 1
        self._workers.pop(owner, None)
        self._touch()
        return n

    async def purge(self, status: str, before: float | None, keep: int | None) -> int:
        rows = [e for e in self._execs.values() if e.status == status]
        rows.sort(key=lambda e: e.completed_at or 0.0, reverse=True)
        doomed = []
        if keep is not None:
            doomed.extend(rows[keep:])
        if before is not None:
            doomed.extend(e for e in rows if (e.completed_at or 0.0) < before)
        gone = {e.id for e in doomed}
        for i in gone:
            e = self._execs.pop(i)
            if e.key is not None:
                self._keys.pop((e.job, e.key), None)
            self._steps.pop(i, None)
            self._logs.pop(i, None)
            self._drop_waiters(i)
        self._touch()
        return len(gone)


def matches(e: ExecutionRecord, f: ExecutionFilter) -> bool:
    """Whether an execution passes a filter (used by backends that filter in Python)."""
    checks = (
        f.ids is None or e.id in f.ids,
        f.job is None or e.job in f.job,
        f.status is None or e.status in f.status,
        f.group is None or e.group == f.group,
        f.parent_id is None or e.parent_id == f.parent_id,
        f.started_before is None or (e.started_at is not None and e.started_at < f.started_before),
        f.started_after is None or (e.started_at is not None and e.started_at > f.started_after),
        f.completed_before is None
        or (e.completed_at is not None and e.completed_at < f.completed_before),
        f.completed_after is None
        or (e.completed_at is not None and e.completed_at > f.completed_after),
        f.attempts is None or e.attempt == f.attempts,
        f.attempts_lt is None or e.attempt < f.attempts_lt,
        f.attempts_gt is None or e.attempt > f.attempts_gt,
        f.search is None or e.id == f.search or f.search in e.input,
    )
    return all(checks)
