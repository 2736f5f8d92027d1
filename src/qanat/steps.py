"""Step functions: checkpointed units of work inside a job.

Each finds the running execution through a contextvar. A step's key is its name plus
an occurrence counter (``fetch``, ``fetch#2``); on replay a recorded step returns its
stored result (or raises its stored error) instead of running again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, get_type_hints

from qanat import codec
from qanat.durations import (
    DEFAULT_BACKOFF,
    BackoffSpec,
    backoff_delay,
    parse_duration,
    validate_backoff,
)
from qanat.durations import to_timestamp as _to_ts
from qanat.engine.failures import decode_error, encode_error
from qanat.engine.state import ExecState, current
from qanat.errors import (
    ConfigurationError,
    LeaseLost,
    NonRetryable,
    PayloadTooLarge,
    RetryAfter,
    Suspend,
    Timeout,
)
from qanat.sizes import check_size
from qanat.storage.base import (
    WAITING,
    Checkpoint,
    EventRecord,
    ExecutionFilter,
    ExecutionRecord,
    StepRecord,
    TriggerFailure,
    Waiter,
    now,
)
from qanat.storage.matching import project, shape_and_value

if TYPE_CHECKING:
    from qanat.execution import Execution
    from qanat.job import Job
    from qanat.pipe import EventInfo, Pipe

T = TypeVar("T")

COMPLETED = "completed"
FAILED = "failed"


@dataclass(frozen=True)
class Step:
    """Options of a ``run`` step: its name, retries, backoff, per-attempt timeout."""

    name: str
    retry: int = 3
    backoff: BackoffSpec = DEFAULT_BACKOFF
    timeout: float | str | timedelta | None = None
    concurrency: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a step needs a non-empty name, got {self.name!r}")
        if isinstance(self.retry, bool) or not isinstance(self.retry, int) or self.retry < 1:
            raise ValueError(f"step {self.name!r}: retry must be an int >= 1, got {self.retry!r}")
        try:
            validate_backoff(self.backoff)
            if self.timeout is not None and parse_duration(self.timeout, what="timeout") <= 0:
                raise ValueError(f"timeout must be longer than zero, got {self.timeout!r}")
        except (TypeError, ValueError) as exc:
            raise ValueError(f"step {self.name!r}: {exc}") from None
        if self.concurrency is not None and (
            isinstance(self.concurrency, bool)
            or not isinstance(self.concurrency, int)
            or self.concurrency < 1
        ):
            raise ValueError(
                f"step {self.name!r}: concurrency must be an int >= 1, got {self.concurrency!r}"
            )


def _return_annotation(fn: Callable[..., Any]) -> Any:
    try:
        return get_type_hints(fn).get("return")
    except Exception:
        return None


def _replayed(st: ExecState, rec: StepRecord, annotation: Any) -> Any:
    if rec.status == COMPLETED:
        value = codec.loads(rec.result) if rec.result is not None else None
        return codec.revive(value, annotation) if annotation is not None else value
    raise decode_error(rec.error or "{}", st.id)


async def _call(st: ExecState, fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    if inspect.iscoroutinefunction(fn):
        return await fn(*args, **kwargs)
    result = await st.worker.run_sync(fn, *args, **kwargs)
    if inspect.isawaitable(result):
        return await result
    return result


async def run(step: str | Step, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` once as a checkpointed step and return its result.

    On replay the stored result is returned (revived to ``fn``'s return annotation).
    The step's own retries follow ``Step(retry=, backoff=)``; when they are exhausted
    the error is checkpointed and raised here, where the handler may catch it.
    """
    opts = step if isinstance(step, Step) else Step(step)
    st = current("run")
    st.boundary()
    key = st.next_key(opts.name)
    rec = st.recorded(key, "run", opts.name)
    if rec is not None and (rec.status == COMPLETED or rec.job_attempt == st.attempt):
        return _replayed(st, rec, _return_annotation(fn))
    if opts.concurrency is None:
        return await _attempts(st, opts, key, fn, args, kwargs)
    holder = f"{st.id}|{key}"
    await _acquire_step(st, opts.name, holder, opts.concurrency)
    try:
        return await _attempts(st, opts, key, fn, args, kwargs)
    finally:
        await st.worker.storage.release_step(opts.name, holder)


async def _acquire_step(st: ExecState, name: str, holder: str, limit: int) -> None:
    """Wait for one of ``limit`` slots of step ``name``, held in storage (so the cap holds
    across every worker) under the worker's lease."""
    worker = st.worker
    ticker = worker.queue.ticker
    while True:
        ev = ticker.event()
        if await worker.storage.acquire_step(name, holder, worker.id, limit, now() + worker.lease):
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ev.wait(), 0.25)


async def _attempts(
    st: ExecState, opts: Step, key: str, fn: Callable[..., Any], args: Any, kwargs: Any
) -> Any:
    started = now()
    limit = None if opts.timeout is None else parse_duration(opts.timeout)
    attempt = 0
    while True:
        attempt += 1
        try:
            if limit is None:
                result = await _call(st, fn, args, kwargs)
            else:
                try:
                    async with asyncio.timeout(limit):
                        result = await _call(st, fn, args, kwargs)
                except TimeoutError:
                    raise Timeout(f"step {opts.name!r} timed out after {limit:g}s") from None
            where = f"the result of step {opts.name!r}"
            text = check_size(codec.dumps(result, where=where), st.worker.queue.max_payload, where)
        except Exception as exc:
            delay = _retry_delay(exc, opts, attempt)
            if delay is None:
                await st.checkpoint(
                    StepRecord(
                        st.id,
                        key,
                        "run",
                        opts.name,
                        FAILED,
                        None,
                        encode_error(exc),
                        attempt,
                        st.attempt,
                        started,
                        now(),
                    )
                )
                raise
            await asyncio.sleep(delay)
            continue
        await st.checkpoint(
            StepRecord(
                st.id,
                key,
                "run",
                opts.name,
                COMPLETED,
                text,
                None,
                attempt,
                st.attempt,
                started,
                now(),
            )
        )
        return result


def _retry_delay(exc: Exception, opts: Step, attempt: int) -> float | None:
    # a result that cannot be stored (TypeError, PayloadTooLarge) would be so again
    if isinstance(exc, NonRetryable | TypeError | PayloadTooLarge) or attempt >= opts.retry:
        return None
    if isinstance(exc, RetryAfter):
        if isinstance(exc.delay, datetime):
            return max(0.0, _to_ts(exc.delay) - now())
        return parse_duration(exc.delay)
    return backoff_delay(opts.backoff, attempt, None)


async def sleep(duration: float | str | timedelta) -> None:
    """Sleep durably: the wake-up time is checkpointed, so a restart still wakes on time."""
    seconds = parse_duration(duration)
    await _sleep(current("sleep"), "sleep", lambda: now() + seconds)


async def sleep_until(when: datetime) -> None:
    """Sleep durably until a timezone-aware datetime."""
    until = _to_ts(when)
    await _sleep(current("sleep_until"), "sleep", lambda: until)


async def _sleep(st: ExecState, name: str, until: Callable[[], float]) -> None:
    st.boundary()
    key = st.next_key(name)
    rec = st.recorded(key, "sleep", name)
    if rec is not None and rec.result is not None:
        wake = float(codec.loads(rec.result))
    else:
        wake = until()
        at = now()
        await st.checkpoint(
            StepRecord(
                st.id, key, "sleep", name, COMPLETED, codec.dumps(wake), None, 1, st.attempt, at, at
            )
        )
    remaining = wake - now()
    if remaining <= 0:
        return
    if remaining > st.worker.hot_sleep:
        st.suspend_status = WAITING
        st.suspend_until = wake
        raise Suspend("sleep")
    from qanat.engine.runner import blocked

    async with blocked(st):
        await asyncio.sleep(remaining)
    st.boundary()


def progress(pct: float, message: str | None = None, details: Any = None) -> None:
    """Record the execution's progress, 0 to 100 (the latest value is kept)."""
    st = current("progress")
    st.worker.progress(st, pct, message, details)


def log(message: str, **fields: Any) -> None:
    """Append a line to the execution's log (visible with ``qanat show`` and ``.logs()``)."""
    st = current("log")
    st.worker.log(st, message, fields)


async def start_child(
    job: Job[Any], args: Sequence[Any], kwargs: Mapping[str, Any], opts: dict[str, Any]
) -> Execution:
    """Start a child execution as a checkpointed step; a replay returns the same child."""
    from qanat.execution import Execution

    st = current("start")
    st.boundary()
    key = st.next_key(job.name)
    rec = st.recorded(key, "start", job.name)
    queue = st.worker.queue
    if rec is not None and rec.result is not None:
        return Execution(queue, str(codec.loads(rec.result)), job.name)
    opts.setdefault("group", st.record.group)
    child, value = job.new_record(args, kwargs, parent_id=st.id, **opts)
    children = [child]
    if job.cache is not None:
        child.input = codec.canonical(codec.loads(child.input))
        since = 0.0 if job.cache == float("inf") else now() - job.cache
        hit = await st.worker.storage.find_cached(job.name, child.input, since)
        if hit is not None:
            child, children = hit, []
    fresh = bool(children)
    if child.key is not None and children:
        # a keyed child may exist already: store it first (idempotent by key) so the
        # step records the id that really is in storage
        new_id = child.id
        [child] = await st.worker.storage.enqueue([child])
        children, fresh = [], child.id == new_id
    at = now()
    text = codec.dumps(child.id)
    step = StepRecord(st.id, key, "start", job.name, COMPLETED, text, None, 1, st.attempt, at, at)
    adopted = bool(children) and st.worker.adopt(child)
    try:
        await st.checkpoint(step, children)
    except BaseException:
        if adopted:
            st.worker.unadopt()
        raise
    if adopted:
        st.worker.spawn_adopted(child, child)
    if fresh:
        st.worker.notify_local()
        await queue.fire(job, "trigger", child.id, value)
    return Execution(queue, child.id, job.name)


async def send_step(pipe: Pipe[Any], data: Any) -> EventInfo:
    """``pipe.send`` inside a job: a checkpointed step; a replay never sends again.

    The event id is derived from the execution, its current run and the step key, and
    storage refuses a second event with one id: a crash between the send and its
    checkpoint replays into the stored event rather than a second one.
    """
    from qanat.pipe import event_info

    st = current("send")
    st.boundary()
    key = st.next_key(pipe.name)
    rec = st.recorded(key, "send", pipe.name)
    queue = st.worker.queue
    if rec is not None and rec.status == COMPLETED and rec.result is not None:
        return event_info(pipe, _event_from_step(codec.loads(rec.result)))
    if pipe.name not in queue.pipe_registry:
        known = ", ".join(sorted(queue.pipe_registry)) or "none"
        raise ConfigurationError(
            f"job {st.record.job!r} sends on pipe {pipe.name!r}, which is not registered on "
            f"its queue (pipes: {known}); add it to Queue(pipes=[...])"
        )
    started = now()
    seed = f"{st.id}|{st.record.started_at!r}|{key}"
    event_id = "ev" + hashlib.sha256(seed.encode()).hexdigest()[:22]
    info = await queue.send_event(pipe, data, event_id=event_id, source=st.id)
    stored = {
        "id": info.id,
        "pipe": info.pipe,
        "data": codec.dumps(info.data, where=f"the data of pipe {pipe.name!r}"),
        "sent_at": info.sent_at.timestamp(),
        "source": info.source,
        "executions": info.executions,
        "woke": info.woke,
        "failed": [[f.source, f.job, f.error, f.at.timestamp()] for f in info.failed],
    }
    text = codec.dumps(stored)
    step = StepRecord(
        st.id, key, "send", pipe.name, COMPLETED, text, None, 1, st.attempt, started, now()
    )
    await st.checkpoint(step)
    return info


def _event_from_step(d: dict[str, Any]) -> EventRecord:
    return EventRecord(
        d["id"],
        d["pipe"],
        d["data"],
        float(d["sent_at"]),
        d.get("source"),
        list(d["executions"]),
        [TriggerFailure(s, j, e, float(a)) for s, j, e, a in d["failed"]],
        list(d.get("woke", [])),
    )


@dataclass(frozen=True)
class _WaitOn:
    """What a durable wait listens to: a pipe, or a job's completions (pseudo-pipe
    ``job:<name>``, event data ``{"input": ..., "output": ...}``)."""

    pipe: str  # the (pseudo-)pipe name waiters are stored under
    what: str  # for messages
    decode: Callable[[str], Any]  # event data text -> what a predicate is called with
    result: Callable[[str], Any]  # event data text -> what wait_for returns
    field: str | None = None  # a dict match applies to this field of the event data


def _pipe_wait(pipe: Pipe[Any]) -> _WaitOn:
    return _WaitOn(pipe.name, f"pipe {pipe.name!r}", pipe.decode, pipe.decode)


def _job_wait(j: Job[Any]) -> _WaitOn:
    def decode(text: str) -> Any:
        data = codec.loads(text)["input"]
        return j.input_for_hooks(j.decode_input(codec.dumps(data)))

    def result(text: str) -> Any:
        return j.decode_output(codec.dumps(codec.loads(text)["output"]))

    return _WaitOn(job_pipe(j.name), f"job {j.name!r}", decode, result, "input")


def job_pipe(name: str) -> str:
    """The pseudo-pipe whose events are the completions of job ``name``."""
    return f"job:{name}"


async def wait_step(pipe: Pipe[Any], match: Any, timeout: float | str | timedelta | None) -> Any:
    """``pipe.wait_for`` inside a job: a durable wait for an event sent after it began.

    The first time it is reached it records a waiter and suspends the execution in one
    storage transaction (status ``waiting`` until the deadline; no slot held). A send
    that matches stores itself as the waiter's delivery and wakes the execution; the
    replay then checkpoints the event's data as this step's result. Past the deadline
    the result is None. Predicate waiters are woken by every send on the pipe and test
    the predicate on the events since they began, suspending again if none fits.
    """
    st = current("wait_for")
    queue = st.worker.queue
    if pipe.name not in queue.pipe_registry:
        known = ", ".join(sorted(queue.pipe_registry)) or "none"
        raise ConfigurationError(
            f"job {st.record.job!r} waits on pipe {pipe.name!r}, which is not registered on "
            f"its queue (pipes: {known}); add it to Queue(pipes=[...])"
        )
    return await _durable_wait(st, _pipe_wait(pipe), match, timeout)


async def job_wait_step(j: Job[Any], match: Any, timeout: float | str | timedelta | None) -> Any:
    """``job.wait_for`` inside a job: ``wait_step`` on the completions of ``j``.

    A completion of ``j`` is recorded as an event on ``job:<name>`` (its input and
    output) by the finishing transaction whenever a waiter of that pseudo-pipe exists;
    a dict match applies to the input, a predicate gets the input, and the result is
    the output revived to ``j``'s output type.
    """
    st = current("wait_for")
    queue = st.worker.queue
    if queue.registry.get(j.name) is not j:
        raise ConfigurationError(
            f"job {st.record.job!r} waits for job {j.name!r}, which is not registered on "
            "its queue; add it to Queue(jobs=[...])"
        )
    return await _durable_wait(st, _job_wait(j), match, timeout)


async def _durable_wait(
    st: ExecState, on: _WaitOn, match: Any, timeout: float | str | timedelta | None
) -> Any:
    st.boundary()
    name = f"wait:{on.pipe}"
    key = st.next_key(name)
    rec = st.recorded(key, "wait", name)
    if rec is not None and rec.status == COMPLETED:
        return _wait_result(on, rec.result)
    predicate = match if callable(match) else None
    shape = value = None
    if predicate is None:
        if match is None:
            match = {}
        if not isinstance(match, Mapping):
            raise TypeError(
                f"wait_for on {on.what}: match must be a dict of expected fields or "
                f"a predicate, got {match!r}"
            )
        plain = codec.loads(codec.dumps(dict(match), where=f"the match of {name!r}"))
        if on.field is not None:
            plain = {on.field: plain} if plain else {}
        shape, value = shape_and_value(plain)
    started = round(now(), 6)
    deadline = None if timeout is None else started + parse_duration(timeout, what="timeout")
    waiter = Waiter(st.id, key, on.pipe, shape, value, started, deadline)
    storage = st.worker.storage
    await st.worker.flush(st)
    # woken and replayed: a delivered event (or a passed deadline) is read, not re-waited
    pre = await storage.waiter(st.id, key) if st.record.claims > 1 else None
    result: Any = None
    if pre is not None and (
        pre.event_id is not None
        or (predicate is None and pre.deadline is not None and pre.deadline <= now())
    ):
        w = pre
        if w.event_id is not None:
            result = {"event": w.event_id, "data": w.data}
    else:
        expect: int | None = 0 if predicate is not None else None
        while True:
            state = await storage.wait(st.id, st.worker.id, waiter, expect, now())
            if state.stop == "paused":
                st.pause_requested = True
            elif state.stop is not None:
                st.stop_reason = state.stop
                raise LeaseLost(state.stop)
            assert state.waiter is not None
            w = state.waiter
            if state.suspended:
                st.suspended = True
                st.suspend_until = w.deadline
                raise Suspend("wait")
            result = None
            if w.event_id is not None:
                result = {"event": w.event_id, "data": w.data}
            elif predicate is not None:
                result = await _first_fitting(storage, on, predicate, w.since)
                if result is None and (w.deadline is None or w.deadline > now()):
                    expect = w.pokes  # nothing fits yet: suspend unless another send came
                    continue
            break
    text = codec.dumps(result)
    step = StepRecord(
        st.id, key, "wait", name, COMPLETED, text, None, 1, st.attempt, w.since, now()
    )
    why = await storage.end_wait(st.id, st.worker.id, Checkpoint(step))
    st.memo[key] = step
    if why == "paused":
        st.pause_requested = True
    elif why is not None:
        st.stop_reason = why
        raise LeaseLost(why)
    return _wait_result(on, text)


async def _first_fitting(
    storage: Any, on: _WaitOn, predicate: Callable[[Any], Any], since: float
) -> dict[str, Any] | None:
    """The oldest event of ``on.pipe`` sent at or after ``since`` that ``predicate`` accepts."""
    events: list[EventRecord] = []
    cursor = None
    while True:
        page = await storage.events(on.pipe, since, 500, cursor)
        events.extend(page.items)
        cursor = page.cursor
        if cursor is None:
            break
    for ev in reversed(events):
        ok = predicate(on.decode(ev.data))
        if inspect.isawaitable(ok):
            ok = await ok
        if ok:
            return {"event": ev.id, "data": ev.data}
    return None


def _wait_result(on: _WaitOn, text: str | None) -> Any:
    got = codec.loads(text) if text is not None else None
    if got is None:
        return None
    return on.result(got["data"])


async def wait_for_completion(
    j: Job[Any], match: Any, timeout: float | str | timedelta | None
) -> Any:
    """``job.wait_for`` outside a job: poll storage for a completion of ``j``, completed
    after this call, whose input matches; its output, or None after ``timeout``.

    Not durable (nothing is stored); the queue's ticker (which notices commits of every
    process) paces the polling. Each poll reads the completions of ``j`` since the call.
    """
    queue = j._bound()
    await queue.ensure_open()
    test: Callable[[ExecutionRecord], Any]
    if callable(match):
        predicate = match

        def test(r: ExecutionRecord) -> Any:
            return predicate(j.input_for_hooks(j.decode_input(r.input)))

    else:
        if match is None:
            match = {}
        if not isinstance(match, Mapping):
            raise TypeError(
                f"wait_for on job {j.name!r}: match must be a dict of expected fields or "
                f"a predicate, got {match!r}"
            )
        shape, value = shape_and_value(codec.loads(codec.dumps(dict(match))))

        def test(r: ExecutionRecord) -> Any:
            return project(codec.loads(r.input), shape) == value

    since = now()
    end = None if timeout is None else since + parse_duration(timeout, what="timeout")
    seen: set[str] = set()
    flt = ExecutionFilter(job=[j.name], status=[COMPLETED], completed_after=since)
    while True:
        event = queue.ticker.event()  # before reading: a commit after it sets it
        found: list[ExecutionRecord] = []
        cursor = None
        while True:
            page = await queue.storage.query(flt, 500, cursor)
            found.extend(r for r in page.items if r.id not in seen)
            cursor = page.cursor
            if cursor is None:
                break
        found.sort(key=lambda r: (r.completed_at or 0.0, r.id))
        for r in found:
            seen.add(r.id)
            ok = test(r)
            if inspect.isawaitable(ok):
                ok = await ok
            if ok:
                return j.decode_output(r.output)
        left = None if end is None else end - now()
        if left is not None and left <= 0:
            return None
        pause = 0.5 if left is None else min(0.5, left)
        try:
            await asyncio.wait_for(event.wait(), pause)
        except TimeoutError:
            pass
