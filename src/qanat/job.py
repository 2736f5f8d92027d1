"""Jobs: ``@job`` / ``Job``, their options, and how they are called."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, Generic, TypeVar, get_type_hints, overload

import pydantic

from qanat import codec
from qanat._ids import new_id
from qanat.context import Context
from qanat.cron import CronSchedule, check_cron_input, check_missed_policy
from qanat.durations import (
    DEFAULT_BACKOFF,
    BackoffSpec,
    parse_duration,
    to_timestamp,
    validate_backoff,
)
from qanat.errors import ConfigurationError
from qanat.flow import CancelOn, FlowOptions, check_cancel_on
from qanat.observability.tracing import capture
from qanat.pipe import Pipe, Trigger
from qanat.sizes import check_size
from qanat.steps import job_wait_step, start_child, wait_for_completion
from qanat.steps.state import current_or_none
from qanat.storage.base import ExecutionRecord, now

if TYPE_CHECKING:
    from qanat.execution import Execution
    from qanat.queue import Queue

R = TypeVar("R")
T = TypeVar("T")

Hook = Callable[..., Any]
DurationLike = float | int | str | timedelta

HOOK_NAMES = (
    "on_trigger",
    "on_start",
    "on_success",
    "on_failure",
    "on_error",
    "on_cancel",
    "on_settled",
)


class Job(Generic[R]):
    """A named handler plus its options. ``@job`` builds one from a function.

    Calling: ``await j.run(**input)`` waits for the output, ``await j.start(**input)``
    returns an ``Execution`` at once. Inside a running job both are checkpointed steps.
    """

    def __init__(
        self,
        name: str | None,
        handler: Callable[..., Any],
        *,
        input: type[pydantic.BaseModel] | None = None,
        output: Any = None,
        triggers: Sequence[Any] = (),
        priority: int | Callable[[Any], int] = 0,
        cron: str | Sequence[str] | None = None,
        tz: str | tzinfo | None = None,
        cron_missed: str = "latest",
        debounce: Any = None,
        throttle: Any = None,
        rate_limit: Any = None,
        concurrency: Any = None,
        singleton: Any = None,
        cancel_on: Sequence[Any] = (),
        batch: Any = None,
        timeout: DurationLike | Callable[[Any], Any] | None = None,
        retry: int | Callable[[Any], int] = 3,
        backoff: BackoffSpec = DEFAULT_BACKOFF,
        cache: bool | DurationLike | None = None,
        on_trigger: Hook | None = None,
        on_start: Hook | None = None,
        on_success: Hook | None = None,
        on_failure: Hook | None = None,
        on_error: Hook | None = None,
        on_cancel: Hook | None = None,
        on_settled: Hook | None = None,
    ) -> None:
        if not callable(handler):
            raise ConfigurationError(f"job handler must be callable, got {handler!r}")
        if name is not None and (not isinstance(name, str) or not name):
            raise ConfigurationError(f"a job name must be a non-empty string, got {name!r}")
        self.name: str = name or handler.__name__
        self.handler = handler
        self.is_async = inspect.iscoroutinefunction(handler)
        self.flow = FlowOptions(
            self.name,
            dict(
                debounce=debounce,
                throttle=throttle,
                rate_limit=rate_limit,
                concurrency=concurrency,
                singleton=singleton,
                batch=batch,
            ),
        )
        self.cancel_on: tuple[CancelOn, ...] = check_cancel_on(self.name, cancel_on)
        self.triggers: tuple[Trigger, ...] = _check_triggers(self.name, triggers)
        self.priority = _check_priority(self.name, priority)
        self.retry = _check_retry(self.name, retry)
        _option(self.name, "backoff", validate_backoff, backoff)
        self.backoff = backoff
        if timeout is not None and not callable(timeout):
            _option(self.name, "timeout", _positive_duration, timeout)
        self.timeout = timeout
        self.cache: float | None = _option(self.name, "cache", _cache_window, cache)
        self.hooks: dict[str, Hook | None] = {
            "on_trigger": on_trigger,
            "on_start": on_start,
            "on_success": on_success,
            "on_failure": on_failure,
            "on_error": on_error,
            "on_cancel": on_cancel,
            "on_settled": on_settled,
        }
        for hook_name, hook in self.hooks.items():
            if hook is not None and not callable(hook):
                raise ConfigurationError(
                    f"job {self.name!r}: {hook_name}= takes a function, got {hook!r}"
                )
        self._schema = _InputSchema(self.name, handler, input)
        self._batch: tuple[str, pydantic.TypeAdapter[Any]] | None = None
        if batch is not None and batch is not False:
            self._batch = _batch_field(self.name, self._schema)
        self.cron: CronSchedule | None = None
        self.cron_missed = check_missed_policy(self.name, cron_missed)
        self.cron_scheduled_at = False
        if cron is not None:
            self.cron = CronSchedule(self.name, cron, tz)
            self.cron_scheduled_at = check_cron_input(
                self.name,
                self._schema.fields,
                self._schema.model if self._schema.is_model else None,
                self._schema.hints,
            )
        elif tz is not None:
            raise ConfigurationError(f"job {self.name!r}: tz= only applies to cron=")
        self._output_annotation = output if output is not None else self._schema.return_annotation
        self._output_adapter = _option(self.name, "output", _adapter, self._output_annotation)
        self._queue: Queue | None = None

    def __repr__(self) -> str:
        return f"<Job {self.name}>"

    # --- input and output -------------------------------------------------------

    def encode_input(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[str, Any]:
        """Validate a call's input; return its JSON text and the validated input.

        A batch job is called with one item; its input is the list of that one item
        (storage appends the items of later calls while the batch is open)."""
        if self._batch is not None:
            field, adapter = self._batch
            if len(args) > 1 or (args and kwargs):
                raise TypeError(f"batch job {self.name!r} takes one item per call")
            item = adapter.validate_python(args[0] if args else dict(kwargs))
            args, kwargs = (), {field: [item]}
        value = self._schema.validate(args, kwargs)
        where = f"the input of job {self.name!r}"
        text = codec.dumps(self._schema.plain(value), where=where)
        return check_size(text, self._max_payload(), where), value

    def _max_payload(self) -> int | None:
        return None if self._queue is None else self._queue.max_payload

    def input_schema(self, ref_template: str = "#/$defs/{model}") -> dict[str, Any]:
        """The JSON schema of a call's input, as a dict of arguments (one item for a
        batch job): for generated docs and forms (``/api/openapi.json``)."""
        if self._batch is not None:
            return self._batch[1].json_schema(ref_template=ref_template)
        return self._schema.model.model_json_schema(ref_template=ref_template)

    def decode_input(self, text: str) -> Any:
        """The validated input of a stored execution."""
        data = codec.loads(text)
        if self._schema.is_model:
            return self._schema.validate((data,), {})
        return self._schema.validate((), data)

    def call_from(self, data: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The call that makes ``data`` (an event, a transform's result) this job's input.

        With ``input=Model`` the data is that one argument; otherwise a mapping (or a
        pydantic model or dataclass) gives the keyword arguments, anything else is the
        one positional argument.
        """
        if self._schema.is_model:
            return (data,), {}
        if isinstance(data, Mapping):
            return (), dict(data)
        if isinstance(data, pydantic.BaseModel):
            return (), {k: getattr(data, k) for k in type(data).model_fields}
        if dataclasses.is_dataclass(data) and not isinstance(data, type):
            return (), {f.name: getattr(data, f.name) for f in dataclasses.fields(data)}
        return (data,), {}

    def input_for_hooks(self, value: Any) -> Any:
        """What ``fn(input)`` options and hooks receive: the model, or a dict of arguments."""
        return self._schema.plain(value)

    def encode_output(self, output: Any) -> str:
        """Validate the handler's output against the annotation and encode it."""
        if self._output_adapter is not None:
            try:
                output = self._output_adapter.validate_python(output)
            except pydantic.ValidationError as exc:
                raise TypeError(
                    f"job {self.name!r} returned a value that does not match its output "
                    f"type {self._output_annotation!r}: {exc}"
                ) from None
        where = f"the output of job {self.name!r}"
        return check_size(codec.dumps(output, where=where), self._max_payload(), where)

    def decode_output(self, text: str | None) -> Any:
        """The output of a completed execution, as the annotated type."""
        if text is None:
            return None
        return codec.revive(codec.loads(text), self._output_annotation)

    async def invoke(
        self, value: Any, ctx: Context, run_sync: Callable[..., Awaitable[Any]]
    ) -> Any:
        """Call the handler with validated input (plain handlers through ``run_sync``)."""
        args, kwargs = self._schema.call_args(value, ctx)
        if self.is_async:
            return await self.handler(*args, **kwargs)
        return await run_sync(self.handler, *args, **kwargs)

    # --- options that depend on the input ----------------------------------------

    def priority_for(self, value: Any) -> int:
        p = self.priority(self.input_for_hooks(value)) if callable(self.priority) else self.priority
        return int(p)

    def attempts_for(self, value: Any) -> int:
        r = self.retry(self.input_for_hooks(value)) if callable(self.retry) else self.retry
        return max(1, int(r))

    def timeout_for(self, value: Any) -> float | None:
        t = self.timeout(self.input_for_hooks(value)) if callable(self.timeout) else self.timeout
        return None if t is None else parse_duration(t)

    # --- calling --------------------------------------------------------------------

    def new_record(
        self,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        *,
        key: str | None = None,
        priority: int | None = None,
        delay: DurationLike | None = None,
        run_at: datetime | None = None,
        deadline: datetime | DurationLike | None = None,
        group: str | None = None,
        parent_id: str | None = None,
        at: float | None = None,
    ) -> tuple[ExecutionRecord, Any]:
        """Validate a call and build the execution record it would store; ``at`` is the
        storage's now (``Storage.clock``; default this host's clock)."""
        text, value = self.encode_input(args, kwargs)
        at = now() if at is None else at
        due = at
        if delay is not None and run_at is not None:
            raise ValueError("pass delay= or run_at=, not both")
        if delay is not None:
            due = at + parse_duration(delay, what="delay")
        elif run_at is not None:
            due = to_timestamp(run_at)
        dl: float | None = None
        if isinstance(deadline, datetime):
            dl = to_timestamp(deadline)
        elif deadline is not None:
            dl = at + parse_duration(deadline, what="deadline")
        rec = ExecutionRecord(
            id=new_id(),
            job=self.name,
            input=text,
            priority=self.priority_for(value) if priority is None else int(priority),
            key=key,
            group=group,
            parent_id=parent_id,
            max_attempts=self.attempts_for(value),
            created_at=at,
            run_at=due,
            available_at=due,
            deadline=dl,
            trace=capture(),
        )
        if self.flow:
            plain = self.input_for_hooks(value)
            if self._batch is not None:
                plain = plain[self._batch[0]][0]
            spec = self.flow.spec_for(plain, self._batch[0] if self._batch else "")
            if spec is not None:
                rec.flow = spec.dump()
        return rec, value

    def into(self, fn: Callable[[Any], Any]) -> Trigger:
        """A trigger: when an execution of this job completes, ``fn(output)`` becomes the
        input of the job that lists it in ``triggers``."""
        if not callable(fn):
            raise ConfigurationError(f"job {self.name!r}: into() takes a function, got {fn!r}")
        return Trigger(self, fn)

    async def wait_for(
        self, match: Any = None, timeout: float | str | timedelta | None = None
    ) -> R | None:
        """Wait for an execution of this job that completes after the wait began and
        whose input matches; its output (as the output type), or None after ``timeout``.

        ``match`` is a dict of expected input fields (nested dicts name nested fields;
        None matches any) or a predicate called with the input. Inside a job this is a
        durable step (the execution holds no slot while it waits; each waiter receives
        a completion exactly once). Outside a job it is a plain call that polls storage.
        """
        if current_or_none() is not None:
            return await job_wait_step(self, match, timeout)  # type: ignore[no-any-return]

        return await wait_for_completion(self, match, timeout)  # type: ignore[no-any-return]

    def _bound(self) -> Queue:
        if self._queue is None:
            raise ConfigurationError(
                f"job {self.name!r} is not registered on a queue: pass it in Queue(jobs=[...]) "
                "and call it through queue.jobs or inside a running job"
            )
        return self._queue

    async def start(self, *args: Any, **kwargs: Any) -> Execution:
        """Start an execution and return its handle at once.

        Keyword options: ``key``, ``priority``, ``delay``, ``run_at``, ``deadline``,
        ``group``; every other argument is the job's input. Inside a job this is a
        checkpointed step: a replay returns the same child.
        """
        opts = _pop_options(kwargs)
        st = current_or_none()
        if st is not None:
            return await start_child(self, args, kwargs, opts)
        return await self._bound().start_execution(self, args, kwargs, opts)

    async def run(self, *args: Any, **kwargs: Any) -> R:
        """Start an execution and wait for its output (raises its final error)."""
        handle = await self.start(*args, **kwargs)
        out: R = await handle.result()
        return out

    async def start_many(self, inputs: Sequence[Mapping[str, Any] | Any]) -> list[Execution]:
        """Enqueue many executions in one transaction; each item is a dict of input or a model."""
        q = self._bound()
        calls = [((), dict(i)) if isinstance(i, Mapping) else ((i,), {}) for i in inputs]
        return await q.start_executions(self, calls)

    async def cancel(
        self, *args: Any, where: Callable[[Any], bool] | None = None, **kwargs: Any
    ) -> int:
        """Cancel live executions of this job whose input matches (or ``where(input)`` holds).

        Returns how many were cancelled.
        """
        q = self._bound()
        if where is None:
            text, _ = self.encode_input(args, kwargs)
            target = codec.canonical(codec.loads(text))

            def where(value: Any) -> bool:
                return codec.canonical(codec.loads(self.encode_input((), value)[0])) == target

        return await q.cancel_where(self, where)

    async def pause(self) -> bool:
        """Stop starting new executions of this job, on every worker of its storage.

        Executions already running carry on; new ones are still enqueued and wait as
        pending, and none of its executions is taken up again (after a durable sleep, a
        retry's backoff or a lost worker) until ``resume``. True if it was not paused.
        """
        return await self._bound().pause_job(self.name, True)

    async def resume(self) -> bool:
        """Start executions of this job again after ``pause``; True if it was paused."""
        return await self._bound().pause_job(self.name, False)

    async def is_paused(self) -> bool:
        """Whether this job is paused (``pause``) on its queue's storage."""
        return self.name in await self._bound().paused_jobs()


def _pop_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    names = ("key", "priority", "delay", "run_at", "deadline", "group")
    return {n: kwargs.pop(n) for n in names if n in kwargs}


@overload
def job(fn: Callable[..., Awaitable[R]], /) -> Job[R]: ...
@overload
def job(fn: Callable[..., R], /) -> Job[R]: ...
@overload
def job(name: str | None = None, /, **options: Any) -> Callable[[Callable[..., Any]], Job[Any]]: ...


def job(fn_or_name: Any = None, /, **options: Any) -> Any:
    """Decorate a function as a job: ``@job``, ``@job()``, ``@job("name", retry=5)``."""
    if callable(fn_or_name):
        return Job(None, fn_or_name, **options)
    name = options.pop("name", fn_or_name)

    def wrap(fn: Callable[..., Any]) -> Job[Any]:
        return Job(name, fn, **options)

    return wrap


def _check_triggers(name: str, triggers: Sequence[Any]) -> tuple[Trigger, ...]:
    if isinstance(triggers, Pipe | Trigger):
        triggers = [triggers]
    out: list[Trigger] = []
    for t in triggers or ():
        if isinstance(t, Pipe):
            out.append(Trigger(t, None))
        elif isinstance(t, Trigger):
            out.append(t)
        elif isinstance(t, Job):
            raise ConfigurationError(
                f"job {name!r}: triggers=[{t.name}] lists a job; use {t.name}.into(fn), "
                "where fn(output) returns this job's input"
            )
        else:
            raise ConfigurationError(
                f"job {name!r}: triggers= takes pipes, pipe.into(fn) and job.into(fn), got {t!r}"
            )
    return tuple(out)


def _option(job: str, option: str, check: Callable[[Any], T], value: Any) -> T:
    """``check(value)``, its error turned into one that names the job and the option."""
    try:
        return check(value)
    except ConfigurationError:
        raise
    except Exception as exc:  # ValueError, TypeError, pydantic's schema errors
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigurationError(f"job {job!r}: {option}= {first_line}") from None


def _positive_duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"must be longer than zero, got {value!r}")
    return seconds


def _check_priority(name: str, priority: Any) -> Any:
    if callable(priority):
        return priority
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ConfigurationError(
            f"job {name!r}: priority must be a whole number (or a function of the input), "
            f"got {priority!r}"
        )
    return priority


def _check_retry(name: str, retry: Any) -> Any:
    if callable(retry):
        return retry
    if isinstance(retry, bool) or not isinstance(retry, int) or retry < 1:
        raise ConfigurationError(
            f"job {name!r}: retry must be a whole number of attempts >= 1 (or a function of "
            f"the input), got {retry!r}"
        )
    return retry


def _cache_window(cache: Any) -> float | None:
    if cache is None or cache is False:
        return None
    if cache is True:
        return float("inf")
    return parse_duration(cache, what="cache")


def _batch_field(job: str, schema: _InputSchema) -> tuple[str, pydantic.TypeAdapter[Any]]:
    """The one ``items: list[T]`` parameter of a batch job's handler, and T's adapter."""
    fields = [schema.arg_name] if schema.is_model else schema.fields
    ann = schema.hints.get(fields[0]) if len(fields) == 1 else None
    origin = getattr(ann, "__origin__", None)
    if ann is not list and origin is not list:
        raise ConfigurationError(
            f"job {job!r}: with batch= the handler takes one list parameter "
            "(items: list[Item]) plus an optional qanat.Context"
        )
    args = getattr(ann, "__args__", None) if origin is list else None
    item = args[0] if args else Any
    return fields[0], pydantic.TypeAdapter(item)


def _adapter(annotation: Any) -> pydantic.TypeAdapter[Any] | None:
    if annotation in (None, inspect.Parameter.empty, Any):
        return None
    if annotation is type(None):
        return pydantic.TypeAdapter(type(None))
    return pydantic.TypeAdapter(annotation)


class _InputSchema:
    """The input of a job: from a pydantic model, or from the handler's own signature."""

    def __init__(self, job: str, handler: Callable[..., Any], model: Any) -> None:
        self.job = job
        try:
            hints = get_type_hints(handler)
        except Exception:
            hints = getattr(handler, "__annotations__", {})
        self.return_annotation = hints.get("return", inspect.Parameter.empty)
        self.hints: dict[str, Any] = dict(hints)
        sig = inspect.signature(handler)
        self.ctx_param: str | None = None
        params: list[inspect.Parameter] = []
        for p in sig.parameters.values():
            ann = hints.get(p.name, p.annotation)
            if ann is Context:
                self.ctx_param = p.name
                continue
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise ConfigurationError(
                    f"job {job!r}: *args and **kwargs can't form an input schema; name each "
                    "parameter, or pass input=SomeModel"
                )
            params.append(p)
        self.model: type[pydantic.BaseModel]
        self.fields: list[str]
        if model is not None:
            if not (isinstance(model, type) and issubclass(model, pydantic.BaseModel)):
                raise ConfigurationError(f"job {job!r}: input= must be a pydantic model class")
            if len(params) != 1:
                raise ConfigurationError(
                    f"job {job!r}: with input={model.__name__} the handler takes exactly one "
                    "argument (plus an optional qanat.Context)"
                )
            self.model = model
            self.fields = []
            self.arg_name = params[0].name
        else:
            defs: dict[str, Any] = {}
            for p in params:
                ann = hints.get(p.name, Any if p.annotation is p.empty else p.annotation)
                default = ... if p.default is p.empty else p.default
                defs[p.name] = (ann, default)
            self.model = pydantic.create_model(
                f"{job}_input", __config__=pydantic.ConfigDict(extra="forbid"), **defs
            )
            self.fields = list(defs)
            self.arg_name = ""

    @property
    def is_model(self) -> bool:
        """True when the input is one pydantic model given as ``input=``."""
        return bool(self.arg_name)

    def validate(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        """Validated input: a model instance (raises pydantic.ValidationError)."""
        if self.is_model:
            if args and not kwargs and len(args) == 1:
                (data,) = args
                if isinstance(data, self.model):
                    return data
                return self.model.model_validate(data)
            if args:
                raise TypeError(f"job {self.job!r} takes one {self.model.__name__} or keywords")
            return self.model.model_validate(dict(kwargs))
        if args:
            if len(args) > len(self.fields):
                raise TypeError(
                    f"job {self.job!r} takes {len(self.fields)} input arguments, got {len(args)}"
                )
            merged = dict(zip(self.fields, args, strict=False))
            dup = set(merged) & set(kwargs)
            if dup:
                raise TypeError(f"job {self.job!r}: argument {sorted(dup)[0]!r} given twice")
            merged.update(kwargs)
            kwargs = merged
        return self.model.model_validate(dict(kwargs))

    def plain(self, value: Any) -> Any:
        """The input as the user sees it: the model, or a dict of the handler's arguments."""
        if self.is_model:
            return value
        return {f: getattr(value, f) for f in self.fields}

    def call_args(self, value: Any, ctx: Context) -> tuple[tuple[Any, ...], dict[str, Any]]:
        kwargs = {self.arg_name: value} if self.arg_name else self.plain(value)
        if self.ctx_param is not None:
            kwargs[self.ctx_param] = ctx
        return (), kwargs
