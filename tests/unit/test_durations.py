"""Durations, frequencies, backoff and timestamps (qanat.durations)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from qanat.durations import (
    DEFAULT_BACKOFF,
    MAX_DELAY,
    Backoff,
    Frequency,
    backoff_allows_retry,
    backoff_delay,
    format_duration,
    from_timestamp,
    parse_duration,
    parse_frequency,
    to_timestamp,
    validate_backoff,
)

# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        (5, 5.0),
        (0.25, 0.25),
        (timedelta(minutes=2), 120.0),
        (timedelta(0), 0.0),
        ("5", 5.0),
        ("0.5", 0.5),
        (" 7 ", 7.0),
        ("100ms", 0.1),
        ("250 milliseconds", 0.25),
        ("1 millisecond", 0.001),
        ("5msec", 0.005),
        ("30s", 30.0),
        ("1.5s", 1.5),
        (".5s", 0.5),
        ("20 sec", 20.0),
        ("10 secs", 10.0),
        ("1 second", 1.0),
        ("45 seconds", 45.0),
        ("2m", 120.0),
        ("1 min", 60.0),
        ("2 mins", 120.0),
        ("1 minute", 60.0),
        ("5 minutes", 300.0),
        ("1h", 3600.0),
        ("1 hr", 3600.0),
        ("2hrs", 7200.0),
        ("1 hour", 3600.0),
        ("3 hours", 10800.0),
        ("1d", 86400.0),
        ("1 day", 86400.0),
        ("2 days", 172800.0),
        ("2w", 1209600.0),
        ("1 week", 604800.0),
        ("3 weeks", 1814400.0),
        ("30S", 30.0),
        ("5 Minutes", 300.0),
        ("1H", 3600.0),
        ("1h30m", 5400.0),
        ("1 hour 30 minutes", 5400.0),
        ("1m 30s", 90.0),
        ("500us", 0.0005),
        ("+5s", 5.0),
        ("0s", 0.0),
    ],
)
def test_parse_duration_accepts(value: Any, seconds: float) -> None:
    result = parse_duration(value)
    assert isinstance(result, float)
    assert result == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    ["5 parsecs", "", "   ", "abc", "s", "5 5", "1..5s", "nan", "inf", "5s garbage", "ms5", "day"],
)
def test_parse_duration_rejects_garbage_naming_it(value: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(value)
    message = str(info.value)
    assert repr(value) in message
    assert message.startswith(f"invalid duration {value!r}: expected a number of seconds")
    assert "'30s', '5m', '1h'" in message


def test_parse_duration_message_exact() -> None:
    with pytest.raises(ValueError) as info:
        parse_duration("5 parsecs")
    assert str(info.value) == (
        "invalid duration '5 parsecs': expected a number of seconds or a string like "
        "'30s', '5m', '1h'"
    )


@pytest.mark.parametrize("value", [-1, -0.5, "-5s", "-1", timedelta(seconds=-1)])
def test_parse_duration_rejects_negative(value: Any) -> None:
    with pytest.raises(ValueError, match="must not be negative") as info:
        parse_duration(value)
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_parse_duration_rejects_non_finite(value: float) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(value)


@pytest.mark.parametrize("value", [True, False])
def test_parse_duration_rejects_bools(value: bool) -> None:
    with pytest.raises(ValueError, match=f"invalid duration {value!r}"):
        parse_duration(value)


@pytest.mark.parametrize("value", [None, [1], {"s": 1}, object()])
def test_parse_duration_rejects_other_types(value: Any) -> None:
    with pytest.raises(TypeError) as info:
        parse_duration(value)
    assert repr(value) in str(info.value)


def test_parse_duration_what_names_the_option() -> None:
    with pytest.raises(ValueError, match=r"^invalid timeout 'soon': "):
        parse_duration("soon", what="timeout")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.1, "100ms"), (0, "0ms"), (30, "30s"), (90, "1m30s"), (5400, "1h30m"), (86400, "1d")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


# --------------------------------------------------------------------------- frequencies


@pytest.mark.parametrize(
    ("value", "count", "window"),
    [
        ("2 per second", 2, 1.0),
        ("3/s", 3, 1.0),
        ("1/min", 1, 60.0),
        ("2 per 5 minutes", 2, 300.0),
        ("10/h", 10, 3600.0),
        ("5 per 2s", 5, 2.0),
        ("100/day", 100, 86400.0),
        ("1 / 30s", 1, 30.0),
        ("7/week", 7, 604800.0),
        ("4 PER MINUTE", 4, 60.0),
        ("1 per a second", 1, 1.0),
        ("3/100ms", 3, 0.1),
        ((2, "5m"), 2, 300.0),
        ((1, 10), 1, 10.0),
        ((3, timedelta(seconds=2)), 3, 2.0),
    ],
)
def test_parse_frequency_accepts(value: Any, count: int, window: float) -> None:
    freq = parse_frequency(value)
    assert freq == Frequency(count, window)
    assert freq.interval == pytest.approx(window / count)


def test_parse_frequency_passes_a_frequency_through() -> None:
    freq = Frequency(2, 1.0)
    assert parse_frequency(freq) is freq
    assert str(freq) == "2/1s"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "fast",
        "0/s",
        "-1/s",
        "1.5/s",
        "two per second",
        "3/",
        "3/parsec",
        "3 per 0s",
        "3/5",
        "per second",
        "3 per second please",
    ],
)
def test_parse_frequency_rejects_naming_it(value: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_frequency(value)
    assert str(info.value).startswith(f"invalid frequency {value!r}: ")


@pytest.mark.parametrize("value", [(0, "1s"), (True, "1s"), (2.5, "1s"), (2, "nope"), (2, 0), (1,)])
def test_parse_frequency_rejects_bad_pairs(value: Any) -> None:
    with pytest.raises(ValueError) as info:
        parse_frequency(value)
    assert str(info.value).startswith(f"invalid frequency {value!r}: ")


@pytest.mark.parametrize("value", [None, 5, ["1/s"]])
def test_parse_frequency_rejects_other_types(value: Any) -> None:
    with pytest.raises(TypeError, match="invalid frequency"):
        parse_frequency(value)


def test_frequency_is_frozen() -> None:
    freq = Frequency(1, 1.0)
    with pytest.raises(AttributeError):
        freq.count = 2  # type: ignore[misc]


# --------------------------------------------------------------------------- backoff


def test_default_backoff_table() -> None:
    assert DEFAULT_BACKOFF == (0.1, 30.0, 120.0, 600.0, 1800.0, 3600.0, 7200.0, 43200.0, 86400.0)


def test_backoff_parses_durations_at_construction() -> None:
    b = Backoff("1s", max="1m", factor=3, jitter=0.5, attempts=4)
    assert (b.initial, b.max, b.factor, b.jitter, b.attempts) == (1.0, 60.0, 3.0, 0.5, 4)
    assert b == Backoff(1, 60, 3, 0.5, 4)
    assert hash(b) == hash(Backoff(1, 60, 3, 0.5, 4))
    with pytest.raises(AttributeError):
        b.initial = 2.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"initial": "soon"}, "invalid backoff initial delay 'soon'"),
        ({"initial": -1}, "invalid backoff initial delay -1"),
        ({"initial": 1, "max": "never"}, "invalid backoff max delay 'never'"),
        ({"initial": 10, "max": 5}, "max 5 is shorter than the initial delay 10"),
        ({"initial": 1, "factor": 0}, "invalid backoff factor 0"),
        ({"initial": 1, "factor": True}, "invalid backoff factor True"),
        ({"initial": 1, "jitter": 1.5}, "invalid backoff jitter 1.5"),
        ({"initial": 1, "jitter": -0.1}, "invalid backoff jitter -0.1"),
        ({"initial": 1, "attempts": -1}, "invalid backoff attempts -1"),
        ({"initial": 1, "attempts": 2.5}, "invalid backoff attempts 2.5"),
    ],
)
def test_backoff_rejects_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as info:
        Backoff(**kwargs)
    assert message in str(info.value)


def test_backoff_delay_grows_and_caps() -> None:
    b = Backoff("1s", max="10s")
    assert [b.delay(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert b.delay(10_000) == 10.0  # no overflow


def test_backoff_without_max_stays_finite() -> None:
    b = Backoff(1)
    assert b.delay(3) == 4.0
    assert b.delay(5000) == MAX_DELAY


def test_backoff_factor_one_is_constant_and_zero_initial_is_zero() -> None:
    assert Backoff(5, factor=1).delay(9) == 5.0
    assert Backoff(0).delay(10_000) == 0.0


def test_backoff_jitter_stays_in_bounds() -> None:
    b = Backoff(10, jitter=0.5)
    delays = {b.delay(1) for _ in range(200)}
    assert all(5.0 <= d <= 15.0 for d in delays)
    assert len(delays) > 1
    capped = Backoff(10, max=10, jitter=1)
    assert all(0.0 <= capped.delay(3) <= 10.0 for _ in range(200))


@pytest.mark.parametrize("attempt", [0, -1, True, 1.0])
def test_backoff_class_delay_rejects_bad_attempt(attempt: Any) -> None:
    with pytest.raises(ValueError, match="invalid attempt number"):
        Backoff(1).delay(attempt)


def test_backoff_attempts_caps_retries() -> None:
    b = Backoff(1, attempts=2)
    assert [b.allows_retry(n) for n in (1, 2, 3)] == [True, True, False]
    assert Backoff(1).allows_retry(1000)
    assert not Backoff(1, attempts=0).allows_retry(1)
    assert backoff_allows_retry(b, 3) is False
    assert backoff_allows_retry("1s", 1000) is True


@pytest.mark.parametrize(
    ("spec", "attempt", "expected"),
    [
        (5, 1, 5.0),
        (0.5, 3, 0.5),
        ("2m", 7, 120.0),
        (timedelta(seconds=3), 2, 3.0),
        ([1, "2s", timedelta(seconds=3)], 1, 1.0),
        ([1, "2s", timedelta(seconds=3)], 2, 2.0),
        ([1, "2s", timedelta(seconds=3)], 3, 3.0),
        ([1, "2s", timedelta(seconds=3)], 50, 3.0),
        (("1s", "1m"), 2, 60.0),
        (DEFAULT_BACKOFF, 1, 0.1),
        (DEFAULT_BACKOFF, 2, 30.0),
        (DEFAULT_BACKOFF, 100, 86400.0),
        (Backoff(1), 3, 4.0),
    ],
)
def test_backoff_delay_forms(spec: Any, attempt: int, expected: float) -> None:
    validate_backoff(spec)
    assert backoff_delay(spec, attempt, None) == pytest.approx(expected)


def test_backoff_delay_callable_gets_attempt_and_input() -> None:
    calls: list[tuple[int, Any]] = []

    def fn(attempt: int, input: Any) -> Any:
        calls.append((attempt, input))
        return f"{attempt * input['base']}s"

    validate_backoff(fn)
    assert backoff_delay(fn, 3, {"base": 2}) == 6.0
    assert calls == [(3, {"base": 2})]
    assert backoff_delay(lambda a, i: timedelta(minutes=a), 2, None) == 120.0


def test_backoff_delay_callable_bad_result_names_it() -> None:
    with pytest.raises(ValueError, match="invalid backoff 'later'"):
        backoff_delay(lambda a, i: "later", 1, None)
    with pytest.raises(ValueError, match="invalid backoff -3"):
        backoff_delay(lambda a, i: -3, 1, None)


def test_backoff_delay_async_callable_is_refused() -> None:
    async def fn(attempt: int, input: Any) -> float:
        return 1.0

    with pytest.raises(TypeError, match="returned an awaitable"):
        backoff_delay(fn, 1, None)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("5 parsecs", "invalid backoff '5 parsecs'"),
        (-1, "invalid backoff -1"),
        (["1s", "oops"], "invalid backoff 'oops'"),
        ([], "the list of delays is empty"),
        (True, "invalid backoff True"),
    ],
)
def test_validate_backoff_rejects_early(spec: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        validate_backoff(spec)
    assert message in str(info.value)
    with pytest.raises(ValueError):
        backoff_delay(spec, 2, None)


@pytest.mark.parametrize("spec", [None, {"a": 1}, object()])
def test_validate_backoff_rejects_other_types(spec: Any) -> None:
    with pytest.raises(TypeError, match="invalid backoff"):
        validate_backoff(spec)
    with pytest.raises(TypeError, match="invalid backoff"):
        backoff_delay(spec, 1, None)


def test_backoff_delay_rejects_bad_attempt() -> None:
    with pytest.raises(ValueError, match="invalid attempt number 0"):
        backoff_delay("1s", 0, None)


# --------------------------------------------------------------------------- timestamps


def test_to_timestamp_aware() -> None:
    assert to_timestamp(datetime(1970, 1, 1, tzinfo=UTC)) == 0.0
    plus_one = timezone(timedelta(hours=1))
    assert to_timestamp(datetime(1970, 1, 1, 1, tzinfo=plus_one)) == 0.0
    assert to_timestamp(datetime(2024, 1, 1, tzinfo=UTC)) == 1704067200.0


def test_to_timestamp_refuses_naive() -> None:
    naive = datetime(2024, 1, 1)
    with pytest.raises(ValueError) as info:
        to_timestamp(naive)
    message = str(info.value)
    assert message.startswith(f"naive datetime {naive!r} is refused")
    assert "pass a timezone-aware datetime" in message


@pytest.mark.parametrize("value", [None, 0, "2024-01-01", datetime(2024, 1, 1).date()])
def test_to_timestamp_refuses_other_types(value: Any) -> None:
    with pytest.raises(TypeError, match="timezone-aware datetime"):
        to_timestamp(value)


def test_from_timestamp_round_trip() -> None:
    dt = from_timestamp(1704067200.5)
    assert dt == datetime(2024, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)
    assert dt.tzinfo is UTC
    assert to_timestamp(dt) == 1704067200.5
