"""Durations, frequencies, backoff schedules and timestamps.

Everything in qanat that takes a length of time accepts the same forms (see the spec,
"Units and values"):

* a number: **seconds** (``0.1``, ``30``), never milliseconds;
* a :class:`datetime.timedelta`;
* a string: ``"100ms"``, ``"30s"``, ``"20 sec"``, ``"2m"``, ``"5 minutes"``, ``"1h"``,
  ``"3 hours"``, ``"1d"``, ``"2w"``, ``"1.5s"``, ``"1h30m"``... (case-insensitive,
  spaces optional; a bare numeric string such as ``"5"`` is seconds).

Frequencies are a count over a window: ``"2 per second"``, ``"3/s"``, ``"1/min"``,
``"2 per 5 minutes"``, ``"10/h"``.

Bad values raise :class:`ValueError` (or :class:`TypeError` for a value of the wrong
kind, such as ``None``) whose message shows the offending value with :func:`repr`, so
that a mistake in a job definition is reported where it is made.
"""

from __future__ import annotations

import inspect
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, TypeAlias

__all__ = [
    "DEFAULT_BACKOFF",
    "MAX_DELAY",
    "Backoff",
    "BackoffSpec",
    "DurationLike",
    "Frequency",
    "FrequencyLike",
    "backoff_allows_retry",
    "backoff_delay",
    "format_duration",
    "from_timestamp",
    "parse_duration",
    "parse_frequency",
    "to_timestamp",
    "validate_backoff",
]

DurationLike: TypeAlias = float | int | str | timedelta
"""Anything :func:`parse_duration` accepts: seconds, a ``timedelta`` or a string."""

MAX_DELAY: float = 365 * 86400.0
"""Ceiling of a :class:`Backoff` delay that has no ``max`` (one year), so that an
exponential schedule never yields an infinite or overflowing delay."""

_UNITS: dict[str, float] = {}
for _names, _seconds in (
    (("us", "µs", "usec", "usecs", "microsecond", "microseconds"), 1e-6),
    (("ms", "msec", "msecs", "millisecond", "milliseconds"), 1e-3),
    (("s", "sec", "secs", "second", "seconds"), 1.0),
    (("m", "min", "mins", "minute", "minutes"), 60.0),
    (("h", "hr", "hrs", "hour", "hours"), 3600.0),
    (("d", "day", "days"), 86400.0),
    (("w", "wk", "wks", "week", "weeks"), 604800.0),
):
    for _name in _names:
        _UNITS[_name] = _seconds
del _names, _seconds, _name

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
# One "<number> <unit>" part; a duration string is one or more of them ("1h30m").
_PART = re.compile(rf"\s*({_NUMBER})\s*([a-zµ]+)\s*")
_BARE_NUMBER = re.compile(rf"\s*({_NUMBER})\s*")
_FREQUENCY = re.compile(r"\s*(\S+?)\s*(?:/|\bper\b)\s*(.*?)\s*", re.IGNORECASE)
_ARTICLE = re.compile(r"(?:an?\s+)?([a-zµ]+)")

_DURATION_HINT = "expected a number of seconds or a string like '30s', '5m', '1h'"
_FREQUENCY_HINT = (
    "expected a string like '3/s', '2 per second', '1/min', '2 per 5 minutes', "
    "or a (count, duration) pair"
)


@lru_cache(maxsize=1024)
def _parse_duration_str(text: str) -> float | None:
    """Seconds in a duration string, or ``None`` when it is not one.

    A leading ``-`` is parsed (so that the caller can say "negative" rather than
    "garbage"): the result is then negative.
    """
    s = text.strip().lower()
    sign = 1.0
    if s[:1] in ("-", "+"):
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    bare = _BARE_NUMBER.fullmatch(s)
    if bare is not None:
        return sign * float(bare.group(1))
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None:
            return None
        factor = _UNITS.get(m.group(2))
        if factor is None:
            return None
        total += float(m.group(1)) * factor
        pos = m.end()
    if pos == 0:
        return None
    return sign * total


def parse_duration(value: DurationLike, *, what: str = "duration") -> float:
    """Return the length of ``value`` in seconds, as a ``float``.

    Args:
        value: a number of seconds (``int`` or ``float``), a :class:`datetime.timedelta`,
            or a string such as ``"100ms"``, ``"30s"``, ``"20 sec"``, ``"2m"``,
            ``"5 minutes"``, ``"1h"``, ``"3 hours"``, ``"1d"``, ``"2w"``, ``"1.5s"`` or
            ``"1h30m"``. Units are case-insensitive and may be separated from the number
            by spaces; a bare numeric string (``"5"``) is seconds.
        what: how the value is called in error messages (``"timeout"``, ``"delay"``…).

    Returns:
        The duration in seconds (zero or more).

    Raises:
        ValueError: the value is negative, not finite, a ``bool``, or a string that is
            not a duration. The message shows the value with ``repr``.
        TypeError: the value is of another type (``None``, a list…).
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid {what} {value!r}: {_DURATION_HINT}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        parsed = _parse_duration_str(value)
        if parsed is None:
            raise ValueError(f"invalid {what} {value!r}: {_DURATION_HINT}")
        seconds = parsed
    elif isinstance(value, timedelta):
        seconds = value.total_seconds()
    else:
        raise TypeError(
            f"invalid {what} {value!r}: expected a number of seconds, a timedelta "
            "or a string like '30s', '5m', '1h'"
        )
    if not math.isfinite(seconds):
        raise ValueError(f"invalid {what} {value!r}: must be finite")
    if seconds < 0:
        raise ValueError(f"invalid {what} {value!r}: must not be negative")
    return seconds


def format_duration(seconds: float) -> str:
    """Format a number of seconds compactly for people: ``"250ms"``, ``"1h30m"``, ``"2d"``.

    The inverse of :func:`parse_duration` for whole milliseconds (sub-millisecond parts
    are rounded away).
    """
    if not math.isfinite(seconds):
        return str(seconds)
    if seconds < 0:
        return "-" + format_duration(-seconds)
    ms = round(seconds * 1000)
    if ms < 1000:
        return f"{ms}ms"
    parts: list[str] = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000)):
        if ms >= size:
            parts.append(f"{ms // size}{unit}")
            ms %= size
    if ms:
        parts.append(f"{ms / 1000:g}s" if ms % 1000 else f"{ms // 1000}s")
    return "".join(parts)


@dataclass(frozen=True)
class Frequency:
    """A count over a window: at most ``count`` events every ``window`` seconds."""

    count: int
    """How many events the window holds (positive)."""
    window: float
    """Length of the window in seconds (positive)."""

    @property
    def interval(self) -> float:
        """Average spacing of events in seconds: ``window / count``."""
        return self.window / self.count

    def __str__(self) -> str:
        return f"{self.count}/{format_duration(self.window)}"


FrequencyLike: TypeAlias = str | tuple[int, DurationLike] | Frequency
"""Anything :func:`parse_frequency` accepts."""


def _frequency_window(text: str) -> float | None:
    """Seconds in the window part of a frequency string (``"s"``, ``"5 minutes"``)."""
    s = text.strip().lower()
    unit = _ARTICLE.fullmatch(s)  # a bare unit, maybe with an article: "second", "a day"
    if unit is not None and unit.group(1) in _UNITS:
        return _UNITS[unit.group(1)]
    if _BARE_NUMBER.fullmatch(s):  # "5/10" is ambiguous: refuse it
        return None
    return _parse_duration_str(s) if s else None


def parse_frequency(value: FrequencyLike) -> Frequency:
    """Parse a count over a window.

    Args:
        value: a string such as ``"2 per second"``, ``"3/s"``, ``"1/min"``,
            ``"2 per 5 minutes"``, ``"10/h"``, ``"5 per 2s"`` or ``"100/day"``; a
            ``(count, duration)`` pair such as ``(2, "5m")``; or a :class:`Frequency`
            (returned as is).

    Returns:
        The :class:`Frequency`.

    Raises:
        ValueError: the count is not a positive whole number, the window is not a
            positive duration, or the string is not a frequency. The message shows the
            value with ``repr``.
        TypeError: the value is of another type.
    """
    if isinstance(value, Frequency):
        return value
    if isinstance(value, str):
        m = _FREQUENCY.fullmatch(value)
        if m is None:
            raise ValueError(f"invalid frequency {value!r}: {_FREQUENCY_HINT}")
        count_text, window_text = m.groups()
        if not count_text.isdigit() or not count_text.isascii():
            raise ValueError(
                f"invalid frequency {value!r}: the count must be a positive whole number; "
                f"{_FREQUENCY_HINT}"
            )
        count = int(count_text)
        window = _frequency_window(window_text)
        if window is None:
            raise ValueError(f"invalid frequency {value!r}: {_FREQUENCY_HINT}")
    elif isinstance(value, tuple):
        if len(value) != 2:
            raise ValueError(f"invalid frequency {value!r}: {_FREQUENCY_HINT}")
        raw_count, raw_window = value
        if isinstance(raw_count, bool) or not isinstance(raw_count, int):
            raise ValueError(
                f"invalid frequency {value!r}: the count must be a positive whole number"
            )
        count = raw_count
        try:
            window = parse_duration(raw_window, what="frequency window")
        except (TypeError, ValueError) as exc:
            raise ValueError(f"invalid frequency {value!r}: {exc}") from None
    else:
        raise TypeError(f"invalid frequency {value!r}: {_FREQUENCY_HINT}")
    if count <= 0:
        raise ValueError(f"invalid frequency {value!r}: the count must be a positive whole number")
    if window <= 0:
        raise ValueError(f"invalid frequency {value!r}: the window must be longer than zero")
    return Frequency(count, window)


@dataclass(frozen=True, init=False)
class Backoff:
    """An exponential backoff: ``initial * factor ** (attempt - 1)``, capped at ``max``.

    Args:
        initial: delay after the first failed attempt (a duration).
        max: ceiling of the delay (a duration), or ``None`` for no ceiling (the delay
            is still kept under :data:`MAX_DELAY`).
        factor: growth of the delay from one attempt to the next (``> 0``; ``1`` keeps
            it constant).
        jitter: a fraction ``0..1`` of the delay randomly added or subtracted, so that
            many failing executions do not retry in lockstep.
        attempts: how many retries this backoff allows (``None``: no limit of its own;
            the job's or step's ``retry`` still applies).

    Durations are parsed here, so a bad one raises :class:`ValueError` where the backoff
    is written.
    """

    initial: float
    max: float | None
    factor: float
    jitter: float
    attempts: int | None

    def __init__(
        self,
        initial: DurationLike,
        max: DurationLike | None = None,
        factor: float = 2,
        jitter: float = 0,
        attempts: int | None = None,
    ) -> None:
        init_s = parse_duration(initial, what="backoff initial delay")
        max_s = None if max is None else parse_duration(max, what="backoff max delay")
        if max_s is not None and max_s < init_s:
            raise ValueError(
                f"invalid backoff: max {max!r} is shorter than the initial delay {initial!r}"
            )
        if (
            isinstance(factor, bool)
            or not isinstance(factor, int | float)
            or not math.isfinite(factor)
            or factor <= 0
        ):
            raise ValueError(f"invalid backoff factor {factor!r}: expected a positive number")
        if isinstance(jitter, bool) or not isinstance(jitter, int | float) or not 0 <= jitter <= 1:
            raise ValueError(
                f"invalid backoff jitter {jitter!r}: expected a fraction between 0 and 1"
            )
        if attempts is not None and (
            isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 0
        ):
            raise ValueError(
                f"invalid backoff attempts {attempts!r}: expected a whole number >= 0 or None"
            )
        object.__setattr__(self, "initial", init_s)
        object.__setattr__(self, "max", max_s)
        object.__setattr__(self, "factor", float(factor))
        object.__setattr__(self, "jitter", float(jitter))
        object.__setattr__(self, "attempts", attempts)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        ``delay(1)`` is the wait before the second attempt. Jitter, if any, is applied
        after the ``max`` cap, and the result is kept between ``0`` and ``max``.
        """
        _check_attempt(attempt)
        ceiling = MAX_DELAY if self.max is None else self.max
        if self.initial == 0:
            return 0.0
        try:
            seconds = self.initial * self.factor ** (attempt - 1)
        except OverflowError:
            seconds = math.inf
        seconds = min(seconds, ceiling)
        if self.jitter:
            seconds += seconds * self.jitter * (2.0 * random.random() - 1.0)
            seconds = min(max(seconds, 0.0), ceiling)
        return seconds

    def allows_retry(self, attempt: int) -> bool:
        """Whether this backoff allows another attempt after failed attempt ``attempt``.

        ``attempts`` counts retries: with ``attempts=2`` the retries after attempts 1 and
        2 are allowed, not the one after attempt 3.
        """
        _check_attempt(attempt)
        return self.attempts is None or attempt <= self.attempts


BackoffSpec: TypeAlias = (
    float
    | int
    | str
    | timedelta
    | list[DurationLike]
    | tuple[DurationLike, ...]
    | Backoff
    | Callable[[int, Any], Any]
)
"""The forms a job's or step's ``backoff=`` takes: a constant duration; a list of
durations indexed by attempt (the last one repeating); a :class:`Backoff`; or
``fn(attempt, input) -> duration``."""

DEFAULT_BACKOFF: tuple[float, ...] = tuple(
    parse_duration(d) for d in ("100ms", "30s", "2m", "10m", "30m", "1h", "2h", "12h", "1d")
)
"""The default schedule, in seconds: ``100ms, 30s, 2m, 10m, 30m, 1h, 2h, 12h, 1d``
(a tuple, so that it cannot be changed by accident through a default argument)."""


def _check_attempt(attempt: int) -> None:
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise ValueError(f"invalid attempt number {attempt!r}: expected a whole number >= 1")


def validate_backoff(spec: BackoffSpec) -> None:
    """Check a backoff specification where it is written, without computing a delay.

    Raises:
        ValueError: a duration in a number, string or list form is malformed or
            negative, or the list is empty.
        TypeError: the specification is of no accepted form.
    """
    if isinstance(spec, Backoff):
        return
    if isinstance(spec, bool):
        raise ValueError(f"invalid backoff {spec!r}: {_DURATION_HINT}")
    if isinstance(spec, int | float | str | timedelta):
        parse_duration(spec, what="backoff")
        return
    if isinstance(spec, list | tuple):
        if not spec:
            raise ValueError("invalid backoff []: the list of delays is empty")
        for item in spec:
            parse_duration(item, what="backoff")
        return
    if callable(spec):
        return
    raise TypeError(
        f"invalid backoff {spec!r}: expected a duration, a list of durations, "
        "a qanat.Backoff or a function fn(attempt, input) -> duration"
    )


def backoff_delay(spec: BackoffSpec, attempt: int, input: Any) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    Args:
        spec: the backoff: a constant duration; a list of durations (``attempt - 1``
            indexes it, the last value repeats); a :class:`Backoff`
            (``spec.delay(attempt)``); or ``fn(attempt, input)`` whose result is parsed
            as a duration.
        attempt: the number of the attempt that just failed, from 1.
        input: the execution's or step's input, passed to a function spec.

    Raises:
        ValueError: as :func:`validate_backoff`, or a function returned a bad duration.
        TypeError: the spec is of no accepted form, or a function returned an awaitable.
    """
    if isinstance(spec, Backoff):
        return spec.delay(attempt)
    _check_attempt(attempt)
    if isinstance(spec, bool):
        raise ValueError(f"invalid backoff {spec!r}: {_DURATION_HINT}")
    if isinstance(spec, int | float | str | timedelta):
        return parse_duration(spec, what="backoff")
    if isinstance(spec, list | tuple):
        if not spec:
            raise ValueError("invalid backoff []: the list of delays is empty")
        return parse_duration(spec[min(attempt, len(spec)) - 1], what="backoff")
    if callable(spec):
        result = spec(attempt, input)
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            raise TypeError(
                f"backoff function {getattr(spec, '__qualname__', spec)!r} returned an "
                "awaitable: it must be a plain function returning a duration"
            )
        return parse_duration(result, what="backoff")
    raise TypeError(
        f"invalid backoff {spec!r}: expected a duration, a list of durations, "
        "a qanat.Backoff or a function fn(attempt, input) -> duration"
    )


def backoff_allows_retry(spec: BackoffSpec, attempt: int) -> bool:
    """Whether ``spec`` allows a retry after failed attempt ``attempt``.

    Only a :class:`Backoff` with ``attempts`` set limits retries; every other form
    leaves the limit to ``retry``.
    """
    if isinstance(spec, Backoff):
        return spec.allows_retry(attempt)
    _check_attempt(attempt)
    return True


def to_timestamp(value: datetime) -> float:
    """Seconds since the Unix epoch of a timezone-aware datetime.

    Raises:
        ValueError: ``value`` is naive (no timezone): its instant would be a guess.
        TypeError: ``value`` is not a :class:`datetime.datetime`.
    """
    if not isinstance(value, datetime):
        raise TypeError(f"expected a timezone-aware datetime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"naive datetime {value!r} is refused: pass a timezone-aware datetime, "
            "e.g. datetime.now(timezone.utc)"
        )
    return value.timestamp()


def from_timestamp(value: float) -> datetime:
    """The timezone-aware (UTC) datetime of a Unix timestamp in seconds."""
    return datetime.fromtimestamp(value, tz=UTC)
