"""``run`` steps: a checkpointed call of a function, its retries, backoff and timeout."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from inspect import CO_COROUTINE
from typing import Any, get_type_hints

from qanat import codec
from qanat._aio import wait_event
from qanat.durations import (
    DEFAULT_BACKOFF,
    BackoffSpec,
    backoff_delay,
    parse_duration,
    validate_backoff,
)
from qanat.durations import to_timestamp as _to_ts
from qanat.errors import NonRetryable, PayloadTooLarge, RetryAfter, Timeout
from qanat.failures import decode_error, encode_error
from qanat.observability.tracing import active_tracer, step_span
from qanat.sizes import check_size
from qanat.steps.state import ExecState, current
from qanat.storage.base import COMPLETED, FAILED, StepRecord, now


@dataclass(frozen=True)
class Step:
    """Options of a ``run`` or ``thread`` step: its name, retries, backoff, per-attempt timeout."""

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


@functools.lru_cache(maxsize=4096)
def _named(name: str) -> Step:
    """The default options of a step called by name (a ``Step`` is immutable: one per
    name, validated once rather than at every call)."""
    return Step(name)


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
    code = getattr(fn, "__code__", None)  # a plain function: its flag, without inspect's unwrapping
    if (code.co_flags & CO_COROUTINE) if code is not None else inspect.iscoroutinefunction(fn):
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
    return await checkpointed("run", step, fn, lambda st: _call(st, fn, args, kwargs))


async def checkpointed(
    kind: str,
    step: str | Step,
    fn: Callable[..., Any],
    call: Callable[[ExecState], Awaitable[Any]],
) -> Any:
    """A step of ``kind`` (``run``, ``thread``) whose attempts are ``call(st)``: replayed
    from its record if it has one, else attempted per its ``Step`` options and
    checkpointed; ``fn`` is what its return annotation is read from on replay."""
    opts = step if isinstance(step, Step) else _named(step) if isinstance(step, str) else Step(step)
    st = current(kind)
    st.boundary()
    key = st.next_key(opts.name)
    rec = st.recorded(key, kind, opts.name)
    if rec is not None and (rec.status == COMPLETED or rec.job_attempt == st.attempt):
        return _replayed(st, rec, _return_annotation(fn))
    if st.record.recoveries:  # only after a worker died under this execution
        await st.enter_step(key)
    if opts.concurrency is None:
        return await _attempts(st, opts, key, kind, call)
    holder = f"{st.id}|{key}"
    with st.between_attempts():
        await _acquire_step(st, opts.name, holder, opts.concurrency)
    try:
        return await _attempts(st, opts, key, kind, call)
    finally:
        await st.worker.storage.release_step(opts.name, holder)


async def _acquire_step(st: ExecState, name: str, holder: str, limit: int) -> None:
    """Wait for one of ``limit`` slots of step ``name``, held in storage (so the cap holds
    across every worker) under the worker's lease."""
    worker = st.worker
    ticker = worker.queue.ticker
    while True:
        ev = ticker.event()
        if await worker.storage.acquire_step(name, holder, worker.id, limit, worker.lease):
            return
        await wait_event(ev, 0.25)


def _attempts(
    st: ExecState, opts: Step, key: str, kind: str, call: Callable[[ExecState], Awaitable[Any]]
) -> Awaitable[Any]:
    """The attempts of one step run, in a ``qanat.step`` span when tracing is on (without
    tracing, the attempt loop itself: no coroutine of its own per step)."""
    if active_tracer() is None:
        return _attempt_loop(st, opts, key, kind, call)
    return _traced_attempts(st, opts, key, kind, call)


async def _traced_attempts(
    st: ExecState, opts: Step, key: str, kind: str, call: Callable[[ExecState], Awaitable[Any]]
) -> Any:
    with step_span(kind, opts.name, key):
        return await _attempt_loop(st, opts, key, kind, call)


async def _attempt_loop(
    st: ExecState, opts: Step, key: str, kind: str, call: Callable[[ExecState], Awaitable[Any]]
) -> Any:
    clock = st.worker.storage.clock
    started = clock()
    limit = None if opts.timeout is None else parse_duration(opts.timeout)
    metrics = st.worker.queue.metrics

    def record(status: str, text: str | None, error: str | None, attempts: int) -> StepRecord:
        ended = clock()
        if metrics is not None:
            metrics.on_step(st.job.name, opts.name, ended - started)
        return StepRecord(
            st.id, key, kind, opts.name, status, text, error, attempts, st.attempt, started, ended
        )

    attempt = 0
    while True:
        attempt += 1
        try:
            if limit is None:
                result = await call(st)
            else:
                try:
                    async with asyncio.timeout(limit):
                        result = await call(st)
                except TimeoutError:
                    raise Timeout(f"step {opts.name!r} timed out after {limit:g}s") from None
            where = f"the result of step {opts.name!r}"
            text = check_size(codec.dumps(result, where=where), st.worker.queue.max_payload, where)
        except Exception as exc:
            delay = _retry_delay(exc, opts, attempt)
            if delay is None:
                await st.checkpoint(record(FAILED, None, encode_error(exc), attempt))
                raise
            with st.between_attempts():
                await asyncio.sleep(delay)
            continue
        await st.checkpoint(record(COMPLETED, text, None, attempt))
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
