"""The ``Queue``: registry of jobs, storage, lifecycle, queries and hooks."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qanat import codec
from qanat._ids import new_id
from qanat.durations import parse_duration
from qanat.engine.watcher import Ticker, Watcher
from qanat.engine.worker import Worker
from qanat.errors import ConfigurationError
from qanat.execution import Execution, outcome_of
from qanat.flow import CancelOn, attr_view
from qanat.hooks import Event, Hooks
from qanat.job import Job
from qanat.monitor import Monitor
from qanat.pipe import Pipe
from qanat.queries import Events, Executions
from qanat.registry import Jobs, Pipes, load_jobs, register
from qanat.sizes import SizeLike, parse_size
from qanat.storage import Storage, from_url
from qanat.storage.base import (
    FINISHED_STATUSES,
    LIVE_STATUSES,
    EventRecord,
    ExecutionRecord,
    TriggerFailure,
)
from qanat.sync import SyncQueue
from qanat.views import EventInfo, event_info

if TYPE_CHECKING:
    from qanat.observability.metrics import Metrics

log = logging.getLogger("qanat")


#: A job a trigger starts, and the transform from the trigger's data to its input.
Target = tuple[Job[Any], Callable[[Any], Any] | None]


class Queue:
    """A set of jobs over one storage; ``async with queue:`` also runs a worker here.

    ``storage`` is a backend object or a URL (``memory://``, ``sqlite:///path.db``);
    ``concurrency`` caps executions running at once in one worker process; ``lease`` is
    how long a claimed execution stays owned without a heartbeat; ``retention`` deletes
    old finished executions (``{"completed": "7d", "failed": "30d"}`` or
    ``{"max_per_status": 10_000}``); ``threads`` is how many child processes run
    ``thread`` steps in a worker (default: the CPU count); ``max_recoveries`` is how
    many worker deaths under one execution, with no checkpoint between, fail it with
    ``WorkerLost``; ``max_payload`` refuses larger inputs, outputs, step results and
    events (``"16MB"``); ``token`` is the bearer token of an orchestration node
    (``storage="http://node:4000"``; default ``$QANAT_TOKEN``).
    """

    def __init__(
        self,
        jobs: Sequence[Job[Any]] | str | Path = (),
        pipes: Sequence[Any] = (),
        storage: Storage | str | None = None,
        concurrency: int | None = None,
        context: Any = None,
        retention: Mapping[str, Any] | None = None,
        lease: float | str = "30s",
        threads: int | None = None,
        max_recoveries: int = 3,
        max_payload: SizeLike = "16MB",
        name: str = "default",
        token: str | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"Queue(name=) must be a non-empty string, got {name!r}")
        self.name = name
        if storage is not None and not isinstance(storage, str | Storage):
            raise ConfigurationError(
                f"Queue(storage=) takes a URL or a storage backend, got {storage!r}"
            )
        self.storage: Storage = (
            from_url(storage or "sqlite:///qanat.db", token=token)
            if (storage is None or isinstance(storage, str))
            else storage
        )
        self.concurrency = _positive_int(concurrency, "concurrency", optional=True)
        self.context = context
        self.lease = _lease(lease)
        #: Child processes for ``thread`` steps in a worker (None: the number of CPUs).
        self.threads = _positive_int(threads, "threads", optional=True)
        #: Worker deaths under an execution, with no checkpoint between, before it fails
        #: with ``WorkerLost``.
        self.max_recoveries = _positive_int(max_recoveries, "max_recoveries")
        #: The largest payload (JSON bytes) stored for an input, output, step or event.
        self.max_payload = parse_size(max_payload, what="Queue(max_payload=)")
        self.retention = _check_retention(retention)
        self.registry: dict[str, Job[Any]] = {}
        for j in load_jobs(jobs):
            self.add(j)
        self.pipe_registry: dict[str, Pipe[Any]] = {}
        for p in pipes:
            self.add_pipe(p)
        self.pipe_targets: dict[str, list[Target]] = {}
        self.job_targets: dict[str, list[Target]] = {}
        self.cancel_targets: dict[str, list[tuple[Job[Any], CancelOn]]] = {}
        self._link_triggers()
        self.jobs = Jobs(self.registry)
        self.pipes = Pipes(self.pipe_registry)
        self.executions = Executions(self)
        self.events = Events(self)
        self.monitor = Monitor(self)
        self.ticker = Ticker(self._changed, self.storage.listen)
        self.watcher = Watcher(self)
        self.worker: Worker | None = None
        self.hooks = Hooks()
        #: This process's Prometheus metrics once turned on for this queue
        #: (``qanat.observability.metrics.enable``); the engine skips them while None.
        self.metrics: Metrics | None = None
        self._open = False
        self._open_lock: asyncio.Lock | None = None
        self._sync: SyncQueue | None = None

    def add(self, j: Job[Any]) -> None:
        """Register a job (names must be unique)."""
        register(self.registry, j, Job, "job", "(use @job)")
        j._queue = self

    def add_pipe(self, p: Pipe[Any]) -> None:
        """Register a pipe (names must be unique)."""
        register(self.pipe_registry, p, Pipe, "pipe", "")
        p._queue = self

    def _link_triggers(self) -> None:
        """Index every job's triggers by pipe and by upstream job; each must be ours."""
        for j in self.registry.values():
            for c in j.cancel_on:
                self._check_own(self.pipe_registry, c.pipe, "pipe", j, "is cancelled by events on")
                self.cancel_targets.setdefault(c.pipe.name, []).append((j, c))
            for t in j.triggers:
                src = t.source
                if isinstance(src, Pipe):
                    self._check_own(self.pipe_registry, src, "pipe", j, "is triggered by")
                    self.pipe_targets.setdefault(src.name, []).append((j, t.transform))
                else:
                    self._check_own(self.registry, src, "job", j, "is triggered by the output of")
                    self.job_targets.setdefault(src.name, []).append((j, t.transform))

    @staticmethod
    def _check_own(
        registry: Mapping[str, Any], obj: Any, kind: str, j: Job[Any], relation: str
    ) -> None:
        """``obj`` (a pipe or job that ``j`` refers to) must be the one registered here."""
        if registry.get(obj.name) is not obj:
            known = ", ".join(sorted(registry)) or "none"
            raise ConfigurationError(
                f"job {j.name!r} {relation} {kind} {obj.name!r}, which is not registered on "
                f"this queue ({kind}s: {known}); add it to Queue({kind}s=[...])"
            )

    # --- lifecycle ----------------------------------------------------------------

    async def _changed(self) -> bool:
        return await self.storage.changed()

    async def ensure_open(self) -> None:
        """Open storage if no one has yet (client use without ``start``)."""
        if self._open:
            return
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if not self._open:
                await self.storage.open()
                self._open = True

    async def start(
        self, worker: bool = True, *, concurrency: int | None = None, hot_sleep: float | None = None
    ) -> None:
        """Open storage; with ``worker=True`` also run executions in this process."""
        await self.ensure_open()
        if worker and self.worker is None and self.registry:
            kw: dict[str, Any] = {}
            if hot_sleep is not None:
                kw["hot_sleep"] = hot_sleep
            self.worker = Worker(
                self, concurrency=concurrency or self.concurrency, lease=self.lease, **kw
            )
            await self.worker.start()

    async def stop(self, grace: float = 10.0) -> None:
        """Stop the worker (draining for ``grace`` seconds) and close storage."""
        if self.worker is not None:
            await self.worker.stop(grace)
            self.worker = None
        await self.watcher.stop()
        await self.ticker.stop()
        if self._open:
            await self.storage.close()
            self._open = False
        self._open_lock = None

    async def __aenter__(self) -> Queue:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def sync(self) -> SyncQueue:
        """A blocking facade for sync programs: ``queue.sync.jobs.x.run(...)``."""
        if self._sync is None:
            self._sync = SyncQueue(self)
        return self._sync

    # --- enqueueing --------------------------------------------------------------

    def clock(self) -> float:
        """The storage's now, estimated (``Storage.clock``): enqueue times, cache ages."""
        return self.storage.clock()

    def notify_local(self) -> None:
        if self.worker is not None:
            self.worker.notify_local()

    def handle_of(self, execution_id: str, job: str) -> Execution:
        """A handle on an execution known by id (the step functions make theirs here)."""
        return Execution(self, execution_id, job)

    def handle(self, rec: ExecutionRecord) -> Execution:
        """A handle on a stored record, carrying it as ``info``."""
        e = Execution(self, rec.id, rec.job)
        e.info = rec
        return e

    async def start_execution(
        self, j: Job[Any], args: Sequence[Any], kwargs: Mapping[str, Any], opts: dict[str, Any]
    ) -> Execution:
        rec, value = j.new_record(args, kwargs, at=self.clock(), **opts)
        await self.ensure_open()
        if j.cache is not None:
            since = self.clock() - j.cache if j.cache != float("inf") else 0.0
            hit = await self.storage.find_cached(
                j.name, codec.canonical(codec.loads(rec.input)), since
            )
            if hit is not None:
                return self.handle(hit)
            rec.input = codec.canonical(codec.loads(rec.input))
        w = self.worker
        adopted = w is not None and w.adopt(rec)
        try:
            [stored] = await self.storage.enqueue([rec])
        except BaseException:
            if w is not None and adopted:
                w.unadopt()
            raise
        if w is not None and adopted:
            w.spawn_adopted(rec, stored)
        if not (adopted and stored.id == rec.id):  # an adopted one runs here already
            self.notify_local()
        if stored.id == rec.id:
            await self.fire(j, "trigger", rec.id, value)
        return self.handle(stored)

    async def start_executions(
        self, j: Job[Any], calls: Sequence[tuple[Sequence[Any], Mapping[str, Any]]]
    ) -> list[Execution]:
        at = self.clock()
        built = [j.new_record(a, k, at=at) for a, k in calls]
        await self.ensure_open()
        stored = await self.storage.enqueue([r for r, _ in built])
        self.notify_local()
        for (rec, value), s in zip(built, stored, strict=True):
            if s.id == rec.id:
                await self.fire(j, "trigger", rec.id, value)
        return [self.handle(s) for s in stored]

    # --- events and triggers --------------------------------------------------------

    async def triggered(
        self, targets: Sequence[Target], data: Any, source: str, group: str | None = None
    ) -> tuple[list[ExecutionRecord], list[TriggerFailure], list[tuple[Job[Any], Any]]]:
        """The executions ``data`` triggers in ``targets``, the triggers that failed, and
        (job, validated input) per execution for the ``trigger`` hooks."""
        records: list[ExecutionRecord] = []
        failures: list[TriggerFailure] = []
        fired: list[tuple[Job[Any], Any]] = []
        for j, transform in targets:
            value = data
            if transform is not None:
                try:
                    value = transform(data)
                    if inspect.isawaitable(value):
                        value = await value
                except Exception as exc:
                    what = getattr(transform, "__name__", repr(transform))
                    error = f"transform {what} raised {type(exc).__name__}: {exc}"
                    failures.append(TriggerFailure(source, j.name, error, self.clock()))
                    continue
            try:
                args, kwargs = j.call_from(value)
                rec, validated = j.new_record(args, kwargs, group=group, at=self.clock())
                if j.cache is not None:
                    rec.input = codec.canonical(codec.loads(rec.input))
            except Exception as exc:
                error = f"invalid input for job {j.name!r}: {type(exc).__name__}: {exc}"
                failures.append(TriggerFailure(source, j.name, error, self.clock()))
                continue
            records.append(rec)
            fired.append((j, validated))
        return records, failures, fired

    async def send_event(
        self,
        pipe: Pipe[Any],
        data: Any,
        *,
        event_id: str | None = None,
        source: str | None = None,
    ) -> EventInfo:
        """Validate and send an event on ``pipe``: record it and enqueue the executions it
        triggers in one transaction (``pipe.send`` and ``qanat send`` come here)."""
        text, value = pipe.encode(data)
        await self.ensure_open()
        eid = event_id or new_id()
        records, failures, fired = await self.triggered(
            self.pipe_targets.get(pipe.name, ()), value, eid
        )
        # Whole microseconds: sent_at as a datetime round-trips into since= exactly.
        event = EventRecord(eid, pipe.name, text, round(self.clock(), 6), source)
        stored = await self.storage.send(event, records, failures)
        if self.worker is not None:
            self.worker.notify_local()  # it may have woken a waiting execution here
        await self.after_trigger(records, fired, set(stored.executions))
        if self.cancel_targets.get(pipe.name):
            await self._cancel_on(pipe, value, event.sent_at, set(stored.executions))
        return event_info(pipe, stored)

    async def _cancel_on(
        self, pipe: Pipe[Any], value: Any, sent_at: float, triggered: set[str]
    ) -> None:
        """Cancel the live executions that a job's ``cancel_on`` matches with this event.

        Decided here, in the process that sends, because ``match`` is Python code: the
        sender needs the job registered. Executions created after the event, or by it,
        are not touched."""
        event = attr_view(value)
        for j, rule in self.cancel_targets[pipe.name]:
            ids = []
            async for e in self.executions.list(job=j.name, status=list(LIVE_STATUSES)):
                rec = e.info
                assert rec is not None
                if rec.id in triggered or rec.created_at > sent_at:
                    continue
                if rule.match is None or _matches(rule, event, rec):
                    ids.append(rec.id)
            if ids:
                await self.cancel_ids(ids, f"cancel_on: event on pipe {pipe.name!r}")

    async def after_trigger(
        self,
        records: Sequence[ExecutionRecord],
        fired: Sequence[tuple[Job[Any], Any]],
        stored: set[str] | None = None,
    ) -> None:
        """Once triggered executions are committed: wake the local worker, run hooks."""
        if not records:
            return
        self.notify_local()
        for rec, (j, value) in zip(records, fired, strict=True):
            if stored is None or rec.id in stored:
                await self.fire(j, "trigger", rec.id, value)

    # --- control -------------------------------------------------------------------

    async def cancel_ids(self, ids: Sequence[str], reason: str | None = None) -> int:
        """Cancel executions (and their live children); returns how many were live."""
        await self.ensure_open()
        before = await self.storage.cancel(ids, reason)
        for rec in before:
            if rec.owner is None:  # nobody runs it: settle it here
                j = self.registry.get(rec.job)
                done = await self.storage.get(rec.id)
                if done is not None:
                    self.watcher.finished(done)
                if j is not None:
                    value = j.decode_input(rec.input)
                    await self.fire(j, "cancel", rec.id, value, reason or "cancelled")
                    await self.fire(j, "settled", rec.id, value, "cancelled")
        if before and self.worker is not None:
            for rec in before:
                st = self.worker.active.get(rec.id)
                if st is not None and st.task is not None and not st.task.done():
                    st.stop_reason = "cancelled"
                    st.record.reason = reason
                    st.task.cancel()
        return len(before)

    async def pause_job(self, name: str, paused: bool) -> bool:
        """Pause or resume starting executions of job ``name`` for every worker on this
        storage; True if that changed its state."""
        await self.ensure_open()
        changed = await self.storage.pause_job(name, paused)
        if self.worker is not None:  # its own adoptions see it at once, not at the next read
            if paused:
                self.worker.paused_jobs.add(name)
            else:
                self.worker.paused_jobs.discard(name)
        self.notify_local()
        return changed

    async def paused_jobs(self) -> set[str]:
        """The names of the jobs paused on this storage."""
        await self.ensure_open()
        return await self.storage.paused_jobs()

    async def cancel_where(self, j: Job[Any], pred: Callable[[Any], bool]) -> int:
        ids = []
        async for e in self.executions.list(job=j.name, status=list(LIVE_STATUSES)):
            assert e.info is not None
            if pred(j.input_for_hooks(j.decode_input(e.info.input))):
                ids.append(e.id)
        return await self.cancel_ids(ids) if ids else 0

    def outcome(self, rec: ExecutionRecord) -> Any:
        """The output of a finished record (raises its error)."""
        j = self.registry.get(rec.job)
        return outcome_of(rec, j.decode_output if j else _plain_output)

    # --- hooks -----------------------------------------------------------------------

    def on(self, event: str, handler: Callable[[Event], Any]) -> None:
        """Call ``handler(event)`` on ``start``, ``success``, ``failure``, ``error``, ``retry``,
        ``cancel``, ``pause``, ``resume``, ``settled``, ``progress`` or ``trigger`` of any
        execution."""
        self.hooks.on(event, handler)

    def has_hooks(self, event: str) -> bool:
        """Whether any global hook listens to ``event``."""
        return self.hooks.has_hooks(event)

    def fire(
        self, j: Job[Any], event: str, execution_id: str, value: Any, *extra: Any
    ) -> Coroutine[Any, Any, None]:
        """Run the job's hook for ``event``, then the global ones. Errors are logged only.

        Awaitable; ``Hooks.fire``'s own coroutine is returned rather than wrapped in one
        more (three fire per execution, on the hot path)."""
        return self.hooks.fire(j, event, execution_id, value, *extra)

    # --- queries -----------------------------------------------------------------------

    async def stats(self) -> dict[str, Any]:
        """Counts by status and job, total retries, mean and p95 run time (seconds), and
        the paused jobs."""
        await self.ensure_open()
        s = await self.storage.stats()
        return {
            "by_status": s.by_status,
            "by_job": s.by_job,
            "retries": s.retries,
            "mean_runtime": s.mean_runtime,
            "p95_runtime": s.p95_runtime,
            "paused_jobs": sorted(await self.storage.paused_jobs()),
        }

    async def apply_retention(self) -> int:
        """Delete finished executions and sent events past the retention policy; returns
        how many (executions plus events).

        Events older than the longest finished-status window are deleted (with
        ``{"completed": "7d", "failed": "30d"}``, events older than 30 days), and with
        ``max_per_status`` all but that many newest events are kept.
        """
        if not self.retention:
            return 0
        n = 0
        keep = self.retention.get("max_per_status")
        windows: list[float] = []
        for status in FINISHED_STATUSES:
            age = self.retention.get(status)
            before = None if age is None else self.clock() - age
            if age is not None:
                windows.append(age)
            if before is not None or keep is not None:
                n += await self.storage.purge(status, before, keep)
        events_before = self.clock() - max(windows) if windows else None
        if events_before is not None or keep is not None:
            n += await self.storage.purge_events(events_before, keep)
        return n


def _positive_int(value: Any, name: str, *, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"Queue({name}=) must be an int >= 1, got {value!r}")
    return value


def _lease(value: Any) -> float:
    try:
        seconds = parse_duration(value, what="lease")
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"Queue(lease=): {exc}") from None
    if seconds <= 0:
        raise ConfigurationError(f"Queue(lease=) must be longer than zero, got {value!r}")
    return seconds


def _matches(rule: CancelOn, event: Any, rec: ExecutionRecord) -> bool:
    """A ``cancel_on`` match; one that raises is logged and counts as no match (the event
    is stored already and must not fail its send)."""
    assert rule.match is not None
    try:
        return bool(rule.match(event, attr_view(codec.loads(rec.input))))
    except Exception:
        log.exception("qanat: cancel_on match of execution %s raised", rec.id)
        return False


def _plain_output(text: str | None) -> Any:
    return None if text is None else codec.loads(text)


def _check_retention(retention: Mapping[str, Any] | None) -> dict[str, Any]:
    if not retention:
        return {}
    if not isinstance(retention, Mapping):
        raise ConfigurationError(
            f"Queue(retention=) takes a dict such as {{'completed': '7d'}}, got {retention!r}"
        )
    out: dict[str, Any] = {}
    for k, v in retention.items():
        if k == "max_per_status":
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigurationError(f"retention max_per_status must be an int >= 0, got {v!r}")
            out[k] = v
        elif k in FINISHED_STATUSES:
            try:
                out[k] = parse_duration(v, what=f"retention {k}")
            except (TypeError, ValueError) as exc:
                raise ConfigurationError(f"Queue(retention=): {exc}") from None
        else:
            raise ConfigurationError(
                f"unknown retention key {k!r}; use {', '.join(FINISHED_STATUSES)} or max_per_status"
            )
    return out
