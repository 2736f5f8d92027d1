"""Events inside a job: ``pipe.send`` as a step, durable ``wait_for`` on a pipe or on a
job's completions, and ``job.wait_for`` outside a job."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from qanat import codec
from qanat._aio import wait_event
from qanat.durations import parse_duration
from qanat.errors import ConfigurationError, LeaseLost, Suspend
from qanat.steps.state import ExecState, current
from qanat.storage.base import (
    COMPLETED,
    Checkpoint,
    EventRecord,
    ExecutionFilter,
    ExecutionRecord,
    StepRecord,
    TriggerFailure,
    Waiter,
)
from qanat.storage.matching import project, shape_and_value
from qanat.views import EventInfo, event_info

if TYPE_CHECKING:
    from qanat.job import Job
    from qanat.pipe import Pipe


async def send_step(pipe: Pipe[Any], data: Any) -> EventInfo:
    """``pipe.send`` inside a job: a checkpointed step; a replay never sends again.

    The event id is derived from the execution, its current run and the step key, and
    storage refuses a second event with one id: a crash between the send and its
    checkpoint replays into the stored event rather than a second one.
    """

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
    started = st.worker.storage.clock()
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
        st.id, key, "send", pipe.name, COMPLETED, text, None, 1, st.attempt, started, started
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
    storage = st.worker.storage
    # the deadline is written and compared by every host: the storage's clock
    started = round(await storage.now(), 6)
    deadline = None if timeout is None else started + parse_duration(timeout, what="timeout")
    waiter = Waiter(st.id, key, on.pipe, shape, value, started, deadline)
    await st.worker.flush(st)
    # woken and replayed: a delivered event (or a passed deadline) is read, not re-waited
    pre = await storage.waiter(st.id, key) if st.record.claims > 1 else None
    result: Any = None
    if pre is not None and (
        pre.event_id is not None
        or (predicate is None and pre.deadline is not None and pre.deadline <= storage.clock())
    ):
        w = pre
        if w.event_id is not None:
            result = {"event": w.event_id, "data": w.data}
    else:
        expect: int | None = 0 if predicate is not None else None
        while True:
            # at=None: the deadline is judged by the storage's clock, in its transaction
            state = await storage.wait(st.id, st.worker.id, waiter, expect)
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
                if result is None and (w.deadline is None or w.deadline > storage.clock()):
                    expect = w.pokes  # nothing fits yet: suspend unless another send came
                    continue
            break
    text = codec.dumps(result)
    step = StepRecord(
        st.id, key, "wait", name, COMPLETED, text, None, 1, st.attempt, w.since, storage.clock()
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

    since = queue.clock()
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
        left = None if end is None else end - queue.clock()
        if left is not None and left <= 0:
            return None
        pause = 0.5 if left is None else min(0.5, left)
        await wait_event(event, pause)
