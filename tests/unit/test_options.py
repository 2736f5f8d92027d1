"""Every option of Step, @job, Queue and the flow-control classes is checked where it is
written: a bad value raises ValueError (ConfigurationError is one) naming the step, job
or Queue option and the value, before anything runs or is stored."""

# ruff: noqa: E501  (the table reads best with one row per line)

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

import qanat
from qanat import (
    Batch,
    CancelOn,
    Concurrency,
    Debounce,
    Queue,
    RateLimit,
    Singleton,
    Step,
    Throttle,
    job,
)


async def handler() -> None: ...


async def items_handler(items: list[int]) -> None: ...


def _job(**options: Any) -> Callable[[], Any]:
    return lambda: job("j", **options)(handler)


def _queue(**options: Any) -> Callable[[], Any]:
    options.setdefault("storage", "memory://")
    return lambda: Queue(**options)


# (what is built, the message it must raise; re.escape'd unless it starts with "re:")
ROWS: list[tuple[str, Callable[[], Any], str]] = [
    # --- Step ------------------------------------------------------------------------
    ("step name empty", lambda: Step(""), "a step needs a non-empty name, got ''"),
    ("step name int", lambda: Step(5), "a step needs a non-empty name, got 5"),
    ("step retry 0", lambda: Step("fetch", retry=0), "step 'fetch': retry must be an int >= 1, got 0"),
    ("step retry str", lambda: Step("fetch", retry="3"), "step 'fetch': retry must be an int >= 1, got '3'"),
    ("step backoff unit", lambda: Step("fetch", backoff="3 lightyears"), "step 'fetch': invalid backoff '3 lightyears'"),
    ("step backoff negative", lambda: Step("fetch", backoff=-1), "step 'fetch': invalid backoff -1"),
    ("step backoff list item", lambda: Step("fetch", backoff=["1s", "soon"]), "step 'fetch': invalid backoff 'soon'"),
    ("step backoff empty list", lambda: Step("fetch", backoff=[]), "step 'fetch': invalid backoff []"),
    ("step backoff object", lambda: Step("fetch", backoff=object()), "re:step 'fetch': invalid backoff <object"),
    ("step timeout unit", lambda: Step("fetch", timeout="soon"), "step 'fetch': invalid timeout 'soon'"),
    ("step timeout negative", lambda: Step("fetch", timeout=-1), "step 'fetch': invalid timeout -1"),
    ("step timeout zero", lambda: Step("fetch", timeout=0), "step 'fetch': timeout must be longer than zero, got 0"),
    ("step concurrency 0", lambda: Step("fetch", concurrency=0), "step 'fetch': concurrency must be an int >= 1, got 0"),
    # --- @job ------------------------------------------------------------------------
    ("job name int", lambda: job(5)(handler), "a job name must be a non-empty string, got 5"),
    ("job handler", lambda: qanat.Job("j", "handler"), "job handler must be callable, got 'handler'"),
    ("job input", _job(input=dict), "job 'j': input= must be a pydantic model class"),
    ("job output", _job(output=42), "job 'j': output= Unable to generate pydantic-core schema for 42"),
    ("job triggers", _job(triggers=["orders"]), "job 'j': triggers= takes pipes, pipe.into(fn) and job.into(fn), got 'orders'"),
    ("job priority str", _job(priority="high"), "job 'j': priority must be a whole number (or a function of the input), got 'high'"),
    ("job priority float", _job(priority=1.5), "job 'j': priority must be a whole number (or a function of the input), got 1.5"),
    ("job cron", _job(cron="every day"), "job 'j': invalid cron expression 'every day'"),
    ("job tz", _job(cron="0 * * * *", tz="Mars/Olympus"), "job 'j': unknown time zone tz='Mars/Olympus'"),
    ("job tz without cron", _job(tz="UTC"), "job 'j': tz= only applies to cron="),
    ("job cron_missed", _job(cron="0 * * * *", cron_missed="some"), "job 'j': cron_missed= is one of 'latest', 'all', 'skip', got 'some'"),
    ("job timeout unit", _job(timeout="soon"), "job 'j': timeout= invalid duration 'soon'"),
    ("job timeout zero", _job(timeout=0), "job 'j': timeout= must be longer than zero, got 0"),
    ("job retry 0", _job(retry=0), "job 'j': retry must be a whole number of attempts >= 1"),
    ("job backoff unit", _job(backoff="3 lightyears"), "job 'j': backoff= invalid backoff '3 lightyears'"),
    ("job backoff list item", _job(backoff=["1s", "soon"]), "job 'j': backoff= invalid backoff 'soon'"),
    ("job cache", _job(cache="yes"), "job 'j': cache= invalid cache 'yes'"),
    ("job cache negative", _job(cache=-5), "job 'j': cache= invalid cache -5"),
    *[
        (f"job {hook}", _job(**{hook: "notify"}), f"job 'j': {hook}= takes a function, got 'notify'")
        for hook in (
            "on_trigger",
            "on_start",
            "on_success",
            "on_failure",
            "on_error",
            "on_cancel",
            "on_settled",
        )
    ],
    # --- flow control ----------------------------------------------------------------
    ("concurrency str", _job(concurrency="x"), "job 'j': concurrency= takes a number or qanat.Concurrency, got 'x'"),
    ("Concurrency limit", _job(concurrency=Concurrency(0)), "job 'j': concurrency= the limit must be a whole number >= 1, got 0"),
    ("Concurrency mode", _job(concurrency=Concurrency(2, mode="x")), "job 'j': concurrency= mode must be one of window, rolling; got 'x'"),
    ("Concurrency rolling int", _job(concurrency=Concurrency(2, mode="rolling")), "job 'j': concurrency= mode 'rolling' needs a frequency"),
    ("Concurrency rolling freq", _job(concurrency=Concurrency("2 per fortnight", mode="rolling")), "job 'j': concurrency= invalid frequency '2 per fortnight'"),
    ("Concurrency key", _job(concurrency=Concurrency(2, key="user")), "job 'j': concurrency= key must be a function of the input, got 'user'"),
    ("throttle", _job(throttle="soon"), "job 'j': throttle= invalid throttle 'soon'"),
    ("throttle bool", _job(throttle=True), "job 'j': throttle= takes '1/s', a duration or qanat.Throttle, got True"),
    ("Throttle zero", _job(throttle=Throttle(0)), "job 'j': throttle= must be longer than zero, got 0"),
    ("Throttle mode", _job(throttle=Throttle("1s", mode="drop")), "job 'j': throttle= mode must be one of queue, discard; got 'drop'"),
    ("Throttle key", _job(throttle=Throttle("1s", key=5)), "job 'j': throttle= key must be a function of the input, got 5"),
    ("rate_limit", _job(rate_limit="lots"), "job 'j': rate_limit= invalid frequency 'lots'"),
    ("RateLimit count", _job(rate_limit=RateLimit("0/s")), "job 'j': rate_limit= invalid frequency '0/s'"),
    ("RateLimit key", _job(rate_limit=RateLimit("1/s", key=5)), "job 'j': rate_limit= key must be a function of the input, got 5"),
    ("debounce", _job(debounce="soon"), "job 'j': debounce= invalid debounce 'soon'"),
    ("debounce list", _job(debounce=[1]), "job 'j': debounce= takes a duration or qanat.Debounce, got [1]"),
    ("Debounce zero", _job(debounce=Debounce(0)), "job 'j': debounce= must be longer than zero, got 0"),
    ("Debounce mode", _job(debounce=Debounce("1s", mode="x")), "job 'j': debounce= mode must be one of trailing, leading; got 'x'"),
    ("Debounce key", _job(debounce=Debounce("1s", key=5)), "job 'j': debounce= key must be a function of the input, got 5"),
    ("Debounce timeout", _job(debounce=Debounce("1s", timeout="soon")), "job 'j': debounce= invalid debounce timeout 'soon'"),
    ("singleton", _job(singleton="yes"), "job 'j': singleton= takes True or qanat.Singleton, got 'yes'"),
    ("Singleton mode", _job(singleton=Singleton(mode="x")), "job 'j': singleton= mode must be one of skip, cancel; got 'x'"),
    ("Singleton key", _job(singleton=Singleton(key=5)), "job 'j': singleton= key must be a function of the input, got 5"),
    ("batch", _job(batch=5), "job 'j': batch= takes qanat.Batch(max_size, timeout), got 5"),
    ("Batch max_size", lambda: job("j", batch=Batch(0, "1s"))(items_handler), "job 'j': batch= max_size must be a whole number >= 1, got 0"),
    ("Batch timeout", lambda: job("j", batch=Batch(2, "soon"))(items_handler), "job 'j': batch= invalid batch timeout 'soon'"),
    ("Batch key", lambda: job("j", batch=Batch(2, "1s", key=5))(items_handler), "job 'j': batch= key must be a function of the input, got 5"),
    ("Batch handler", _job(batch=Batch(2, "1s")), "job 'j': with batch= the handler takes one list parameter"),
    ("cancel_on", _job(cancel_on=["orders"]), "job 'j': cancel_on= takes a list of qanat.CancelOn(pipe, match), got 'orders'"),
    ("CancelOn pipe", _job(cancel_on=[CancelOn("orders")]), "job 'j': cancel_on= takes a list of qanat.CancelOn(pipe, match)"),
    ("CancelOn match", _job(cancel_on=[CancelOn(qanat.Pipe("p"), match=5)]), "job 'j': cancel_on= match must be a function (event, input), got 5"),
    # --- Queue -----------------------------------------------------------------------
    ("queue jobs", _queue(jobs=5), "Queue(jobs=) takes a list of jobs or a folder of job modules, got 5"),
    ("queue jobs item", _queue(jobs=["j"]), "Queue(jobs=...) takes Job objects (use @job), got 'j'"),
    ("queue pipes item", _queue(pipes=["p"]), "Queue(pipes=...) takes Pipe objects, got 'p'"),
    ("queue storage", _queue(storage=5), "Queue(storage=) takes a URL or a storage backend, got 5"),
    ("queue concurrency 0", _queue(concurrency=0), "Queue(concurrency=) must be an int >= 1, got 0"),
    ("queue concurrency str", _queue(concurrency="4"), "Queue(concurrency=) must be an int >= 1, got '4'"),
    ("queue concurrency float", _queue(concurrency=2.5), "Queue(concurrency=) must be an int >= 1, got 2.5"),
    ("queue retention list", _queue(retention=["7d"]), "Queue(retention=) takes a dict such as {'completed': '7d'}, got ['7d']"),
    ("queue retention key", _queue(retention={"done": "7d"}), "unknown retention key 'done'"),
    ("queue retention age", _queue(retention={"completed": "soon"}), "Queue(retention=): invalid retention completed 'soon'"),
    ("queue retention max", _queue(retention={"max_per_status": -1}), "retention max_per_status must be an int >= 0, got -1"),
    ("queue lease unit", _queue(lease="soon"), "Queue(lease=): invalid lease 'soon'"),
    ("queue lease zero", _queue(lease=0), "Queue(lease=) must be longer than zero, got 0"),
    ("queue threads", _queue(threads=0), "Queue(threads=) must be an int >= 1, got 0"),
    ("queue max_recoveries", _queue(max_recoveries="3"), "Queue(max_recoveries=) must be an int >= 1, got '3'"),
    ("queue max_payload unit", _queue(max_payload="3 lightyears"), "Queue(max_payload=): '3 lightyears' is not a size"),
    ("queue max_payload zero", _queue(max_payload=0), "Queue(max_payload=) must be positive, got 0"),
    ("queue name", _queue(name=""), "Queue(name=) must be a non-empty string, got ''"),
]  # fmt: skip


@pytest.mark.parametrize(("build", "message"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_bad_option_raises_where_written(build: Callable[[], Any], message: str) -> None:
    pattern = message[3:] if message.startswith("re:") else re.escape(message)
    with pytest.raises(ValueError, match=pattern):
        build()


def test_good_options_are_accepted() -> None:
    """The checks refuse only what is wrong: every form the docs show is accepted."""
    Step("fetch", retry=5, backoff=["1s", "5s"], timeout="30s", concurrency=2)
    Step("fetch", backoff=qanat.Backoff("1s", max="1m"), timeout=0.5)
    Step("fetch", backoff=lambda attempt, value: attempt)
    j = job(
        "good",
        priority=lambda value: 1,
        timeout=lambda value: "5s",
        retry=lambda value: 2,
        backoff="10s",
        cache="1h",
        on_success=lambda value, out: None,
        concurrency=Concurrency("2 per 5 minutes", mode="rolling"),
        throttle="1/s",
        debounce=Debounce("1s", timeout="10s"),
    )(handler)
    assert j.priority(None) == 1
    q = Queue(jobs=[j], storage="memory://", concurrency=4, lease=10, retention={"completed": "7d"})
    assert (q.concurrency, q.lease) == (4, 10.0)
