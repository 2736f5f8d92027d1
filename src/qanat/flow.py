"""Flow-control options of ``@job``: what they accept, and the rules they store.

Each option is checked when the job is defined (a bad limit, mode or frequency raises
``ConfigurationError`` naming the job and the option). Each also accepts a function of
the input returning the option; it runs, with the key functions, when an execution is
enqueued, and the result is stored with the execution as a
:class:`~qanat.storage.flow.FlowSpec`. Storage applies it (see ``storage/flow.py``), so
every limit holds across all workers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from qanat.durations import Frequency, parse_duration, parse_frequency
from qanat.errors import ConfigurationError
from qanat.pipe import Pipe
from qanat.storage.flow import FlowSpec, gate_id

KeyFn = Callable[[Any], Any] | None
DurationLike = float | int | str | timedelta


@dataclass(frozen=True)
class Concurrency:
    """At most ``limit`` executions at once (``window``), or at most ``limit`` starts per
    window (``rolling``, ``limit="2 per 5 minutes"``), per ``key(input)``."""

    limit: int | str | tuple[int, DurationLike] | Frequency
    key: KeyFn = None
    mode: str = "window"


@dataclass(frozen=True)
class Throttle:
    """Starts spaced at least ``duration`` apart per key (``"1/s"`` means one second).

    ``queue``: later triggers wait their turn, in order. ``discard``: a trigger within
    ``duration`` of the last accepted one is dropped (``skipped``, reason ``throttled``).
    """

    duration: DurationLike | Frequency
    key: KeyFn = None
    mode: str = "queue"


@dataclass(frozen=True)
class RateLimit:
    """At most ``limit`` (a frequency, ``"10/min"``) accepted triggers per window per key;
    the rest are dropped (``skipped``, reason ``rate_limited``)."""

    limit: str | tuple[int, DurationLike] | Frequency
    key: KeyFn = None


@dataclass(frozen=True)
class Debounce:
    """Run once a stream of triggers pauses for ``duration`` (``trailing``: the last input
    runs), or at once and then trailing (``leading``); ``timeout`` caps the wait since the
    first trigger of a stream."""

    duration: DurationLike
    key: KeyFn = None
    mode: str = "trailing"
    timeout: DurationLike | None = None


@dataclass(frozen=True)
class Singleton:
    """At most one live execution per key: ``skip`` drops a new one while one is live,
    ``cancel`` cancels the live one in favour of the new one."""

    key: KeyFn = None
    mode: str = "skip"


@dataclass(frozen=True)
class CancelOn:
    """Cancel a live execution when an event on ``pipe`` matches it: ``match(event,
    input)`` returns True (without ``match`` every event on the pipe cancels)."""

    pipe: Pipe[Any]
    match: Callable[[Any, Any], Any] | None = None


@dataclass(frozen=True)
class Batch:
    """Collect triggers into one execution: it starts when ``max_size`` have arrived or
    ``timeout`` after the first, and the handler receives the list."""

    max_size: int
    timeout: DurationLike
    key: KeyFn = None


# --- checking options --------------------------------------------------------------------


def _bad(job: str, option: str, why: str) -> ConfigurationError:
    return ConfigurationError(f"job {job!r}: {option}= {why}")


def _duration(job: str, option: str, value: Any, what: str | None = None) -> float:
    try:
        d = parse_duration(value, what=what or option)
    except (TypeError, ValueError) as exc:
        raise _bad(job, option, str(exc)) from None
    if d <= 0:
        raise _bad(job, option, f"must be longer than zero, got {value!r}")
    return d


def _frequency(job: str, option: str, value: Any) -> Frequency:
    try:
        return parse_frequency(value)
    except (TypeError, ValueError) as exc:
        raise _bad(job, option, str(exc)) from None


def _mode(job: str, option: str, mode: Any, allowed: tuple[str, ...]) -> str:
    if mode not in allowed:
        raise _bad(job, option, f"mode must be one of {', '.join(allowed)}; got {mode!r}")
    return str(mode)


def _key(job: str, option: str, key: Any) -> None:
    if key is not None and not callable(key):
        raise _bad(job, option, f"key must be a function of the input, got {key!r}")


def _positive_int(job: str, option: str, what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _bad(job, option, f"{what} must be a whole number >= 1, got {value!r}")
    return value


def check_concurrency(job: str, value: Any) -> Concurrency:
    if isinstance(value, int) and not isinstance(value, bool):
        value = Concurrency(value)
    if not isinstance(value, Concurrency):
        raise _bad(job, "concurrency", f"takes a number or qanat.Concurrency, got {value!r}")
    mode = _mode(job, "concurrency", value.mode, ("window", "rolling"))
    _key(job, "concurrency", value.key)
    if mode == "window":
        _positive_int(job, "concurrency", "the limit", value.limit)
    elif isinstance(value.limit, int) and not isinstance(value.limit, bool):
        raise _bad(
            job,
            "concurrency",
            f"mode 'rolling' needs a frequency such as '2 per 5 minutes', got {value.limit!r}",
        )
    else:
        _frequency(job, "concurrency", value.limit)
    return value


def check_throttle(job: str, value: Any) -> Throttle:
    if not isinstance(value, Throttle):
        if isinstance(value, str | int | float | timedelta | Frequency) and not isinstance(
            value, bool
        ):
            value = Throttle(value)
        else:
            raise _bad(job, "throttle", f"takes '1/s', a duration or qanat.Throttle, got {value!r}")
    throttle_gap(job, value.duration)
    _mode(job, "throttle", value.mode, ("queue", "discard"))
    _key(job, "throttle", value.key)
    checked: Throttle = value
    return checked


def throttle_gap(job: str, duration: Any) -> float:
    """The spacing a throttle means: a duration, or a frequency's interval ("10/min": 6 s)."""
    if isinstance(duration, Frequency) or (isinstance(duration, str) and _is_frequency(duration)):
        return _frequency(job, "throttle", duration).interval
    return _duration(job, "throttle", duration)


def _is_frequency(text: str) -> bool:
    return "/" in text or " per " in f" {text.lower()} "


def check_rate_limit(job: str, value: Any) -> RateLimit:
    if not isinstance(value, RateLimit):
        value = RateLimit(value)
    _frequency(job, "rate_limit", value.limit)
    _key(job, "rate_limit", value.key)
    checked: RateLimit = value
    return checked


def check_debounce(job: str, value: Any) -> Debounce:
    if not isinstance(value, Debounce):
        if isinstance(value, bool) or not isinstance(value, str | int | float | timedelta):
            raise _bad(job, "debounce", f"takes a duration or qanat.Debounce, got {value!r}")
        value = Debounce(value)
    _duration(job, "debounce", value.duration)
    _mode(job, "debounce", value.mode, ("trailing", "leading"))
    _key(job, "debounce", value.key)
    if value.timeout is not None:
        _duration(job, "debounce", value.timeout, "debounce timeout")
    checked: Debounce = value
    return checked


def check_singleton(job: str, value: Any) -> Singleton:
    if value is True:
        value = Singleton()
    if not isinstance(value, Singleton):
        raise _bad(job, "singleton", f"takes True or qanat.Singleton, got {value!r}")
    _mode(job, "singleton", value.mode, ("skip", "cancel"))
    _key(job, "singleton", value.key)
    return value


def check_batch(job: str, value: Any) -> Batch:
    if not isinstance(value, Batch):
        raise _bad(job, "batch", f"takes qanat.Batch(max_size, timeout), got {value!r}")
    _positive_int(job, "batch", "max_size", value.max_size)
    _duration(job, "batch", value.timeout, "batch timeout")
    _key(job, "batch", value.key)
    return value


def check_cancel_on(job: str, value: Any) -> tuple[CancelOn, ...]:
    if isinstance(value, CancelOn):
        value = [value]
    out: list[CancelOn] = []
    for c in value or ():
        if isinstance(c, Pipe):
            c = CancelOn(c)
        if not isinstance(c, CancelOn) or not isinstance(c.pipe, Pipe):
            raise _bad(job, "cancel_on", f"takes a list of qanat.CancelOn(pipe, match), got {c!r}")
        if c.match is not None and not callable(c.match):
            raise _bad(
                job, "cancel_on", f"match must be a function (event, input), got {c.match!r}"
            )
        out.append(c)
    return tuple(out)


_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "concurrency": check_concurrency,
    "throttle": check_throttle,
    "rate_limit": check_rate_limit,
    "debounce": check_debounce,
    "singleton": check_singleton,
    "batch": check_batch,
}


#: The option each gate rule comes from (for messages).
_OPTION_OF = {
    "window": "concurrency",
    "rolling": "concurrency",
    "throttle": "throttle",
    "discard": "throttle",
    "rate": "rate_limit",
    "debounce": "debounce",
    "singleton": "singleton",
    "batch": "batch",
}


def _is_option_fn(value: Any) -> bool:
    """A function of the input that returns the option (not an option object itself)."""
    return callable(value) and not isinstance(value, type)


class FlowOptions:
    """A job's flow-control options, checked; :meth:`spec_for` computes one execution's
    rules from its input."""

    def __init__(self, job: str, options: Mapping[str, Any]) -> None:
        self.job = job
        self.options: dict[str, Any] = {}
        for name, check in _CHECKS.items():
            value = options.get(name)
            if value is None or value is False:
                continue
            self.options[name] = value if _is_option_fn(value) else check(job, value)

    def __bool__(self) -> bool:
        return bool(self.options)

    def _resolve(self, name: str, plain: Any) -> Any:
        value = self.options.get(name)
        if value is None or not _is_option_fn(value):
            return value
        try:
            got = value(plain)
        except Exception as exc:
            raise ConfigurationError(
                f"job {self.job!r}: the {name}= function raised {type(exc).__name__}: {exc}"
            ) from exc
        if got is None or got is False:
            return None
        return _CHECKS[name](self.job, got)

    def _gate(self, rule: str, key: KeyFn, plain: Any) -> str:
        if key is None:
            return gate_id(self.job, rule, None)
        try:
            k = key(plain)
        except Exception as exc:
            raise ConfigurationError(
                f"job {self.job!r}: the key function of {_OPTION_OF[rule]}= raised "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return gate_id(self.job, rule, None if k is None else str(k))

    def spec_for(self, plain: Any, batch_field: str = "") -> FlowSpec | None:
        """The rules of an execution whose input (as key functions see it) is ``plain``."""
        if not self.options:
            return None
        spec = FlowSpec()
        c = self._resolve("concurrency", plain)
        if c is not None:
            if c.mode == "window":
                spec.window = (self._gate("window", c.key, plain), int(c.limit))
            else:
                f = parse_frequency(c.limit)
                spec.rolling.append((self._gate("rolling", c.key, plain), f.count, f.window))
        t = self._resolve("throttle", plain)
        if t is not None:
            gap = throttle_gap(self.job, t.duration)
            if t.mode == "queue":
                spec.rolling.append((self._gate("throttle", t.key, plain), 1, gap))
            else:
                spec.discard = (self._gate("discard", t.key, plain), gap)
        r = self._resolve("rate_limit", plain)
        if r is not None:
            f = parse_frequency(r.limit)
            spec.rate = (self._gate("rate", r.key, plain), f.count, f.window)
        d = self._resolve("debounce", plain)
        if d is not None:
            timeout = None if d.timeout is None else parse_duration(d.timeout)
            spec.debounce = (
                self._gate("debounce", d.key, plain),
                parse_duration(d.duration),
                d.mode == "leading",
                timeout,
            )
        s = self._resolve("singleton", plain)
        if s is not None:
            spec.singleton = (self._gate("singleton", s.key, plain), s.mode == "cancel")
        b = self._resolve("batch", plain)
        if b is not None:
            spec.batch = (
                self._gate("batch", b.key, plain),
                b.max_size,
                parse_duration(b.timeout),
                batch_field,
            )
        return spec


class _AttrDict(dict[str, Any]):
    """A dict whose keys also read as attributes (``event.order_id``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return attr_view(self[name])
        except KeyError:
            raise AttributeError(name) from None


def attr_view(value: Any) -> Any:
    """``value``, with mappings readable as ``m["k"]`` and as ``m.k`` (``cancel_on`` match)."""
    if isinstance(value, Mapping) and not isinstance(value, _AttrDict):
        return _AttrDict(value)
    return value
