"""Flow control across three real worker processes sharing one SQLite file.

Limits that gate starts (concurrency ``window`` and ``rolling``, throttle ``queue``) are
checked on what the jobs themselves record (start and end times appended to a file with
one O_APPEND write each), so they would fail if the workers ignored the limit: three
workers with the default per-process concurrency start everything at once. Rules decided
at enqueue (rate limit, throttle ``discard``, debounce, singleton) must give the same
outcomes with three workers as with one, on a second database file.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from qanat import Queue, codec
from qanat.storage.base import FINISHED_STATUSES, ExecutionFilter, ExecutionRecord

if TYPE_CHECKING:
    from conftest import Project

T = TypeVar("T")

FLOW_APP = r'''
import asyncio
import os
import time

import qanat
from qanat import Concurrency, Context, Throttle, job

DIR = os.environ["QANAT_TEST_DIR"]


def append(name, line):
    """One write with O_APPEND: lines from many processes never interleave."""
    fd = os.open(os.path.join(DIR, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


async def span(log, label, ctx, seconds):
    start = time.time()
    await asyncio.sleep(seconds)
    end = time.time()
    append(log, f"{label} {ctx.execution_id} {os.getpid()} {start!r} {end!r}")


def started(log, label, ctx):
    append(log, f"{label} {ctx.execution_id} {os.getpid()} {time.time()!r}")


@job(concurrency=2)
async def limited(i: int, ctx: Context) -> int:
    await span("limited.log", i, ctx, 0.08)
    return i


@job(concurrency=Concurrency(1, key=lambda i: i["user"]))
async def per_user(user: str, i: int, ctx: Context) -> int:
    await span("per_user.log", user, ctx, 0.08)
    return i


@job(rate_limit="5/min")
async def rated(i: int, ctx: Context) -> int:
    started("rated.log", i, ctx)
    return i


@job(throttle=Throttle("1/min", mode="discard"))
async def dropped(i: int, ctx: Context) -> int:
    started("dropped.log", i, ctx)
    return i


@job(debounce="2s")
async def debounced(i: int, ctx: Context) -> int:
    started("debounced.log", i, ctx)
    return i


@job(singleton=True)
async def single(i: int, ctx: Context) -> int:
    """Runs until the file ``release-<i>`` appears (at most 30 s)."""
    started("single.log", i, ctx)
    end = time.monotonic() + 30
    while time.monotonic() < end and not os.path.exists(os.path.join(DIR, f"release-{i}")):
        await asyncio.sleep(0.01)
    return i


@job(throttle="4/s")
async def spaced(i: int, ctx: Context) -> int:
    started("spaced.log", i, ctx)
    return i


@job(concurrency=Concurrency("3 per 2s", mode="rolling"))
async def rolling(i: int, ctx: Context) -> int:
    started("rolling.log", i, ctx)
    return i


queue = qanat.Queue(
    jobs=[limited, per_user, rated, dropped, debounced, single, spaced, rolling],
    storage=os.environ["QANAT_TEST_STORAGE"],
)
'''

APP = "flowapp:queue"


# --- helpers -----------------------------------------------------------------------------

_modules: dict[Path, ModuleType] = {}


def _flow_module(project: Project) -> ModuleType:
    """flowapp.py of ``project``, imported here under a private name (for enqueueing)."""
    path = project.root / "flowapp.py"
    if path not in _modules:
        if not path.exists():
            path.write_text(FLOW_APP)
        _modules[path] = project.load(path, f"qanat_flow_app_{id(project)}")
    return _modules[path]


def client(project: Project, body: Callable[[Queue], Awaitable[T]]) -> T:
    """Run ``body(queue)`` against the flow app's queue of ``project`` (no worker here)."""
    return project.client(body, _flow_module(project).queue)


async def _nothing(q: Queue) -> None:
    return None


def start_workers(project: Project, n: int) -> list[int]:
    """Start ``n`` separate ``qanat worker flowapp:queue`` processes; their pids."""
    # Create the database first: workers racing to create a fresh file can fail to start
    # ("database is locked" from PRAGMA journal_mode = WAL), a bug of the SQLite backend.
    client(project, _nothing)
    workers = [project.worker(app=APP, ready=False) for _ in range(n)]
    for w in workers:
        w.wait_ready()
    return [w.pid for w in workers]


def records(project: Project, job: str) -> list[ExecutionRecord]:
    async def body(q: Queue) -> list[ExecutionRecord]:
        page = await q.storage.query(ExecutionFilter(job=[job]), 10_000, None)
        return sorted(page.items, key=lambda r: r.created_at)

    return client(project, body)


def wait_all_finished(
    project: Project, job: str, count: int, timeout: float = 30.0
) -> list[ExecutionRecord]:
    """The ``count`` executions of ``job``, once all are finished (oldest first)."""

    last: list[ExecutionRecord] = []

    def done() -> list[ExecutionRecord] | None:
        last[:] = records(project, job)
        if len(last) == count and all(r.status in FINISHED_STATUSES for r in last):
            return last
        return None

    try:
        return project.wait_until(
            done, timeout=timeout, what=f"{count} {job} executions finished", interval=0.1
        )
    except AssertionError as exc:
        states = Counter((r.status, r.reason) for r in last)
        errors = {r.error for r in last if r.error}
        raise AssertionError(f"{exc}; statuses {dict(states)}; errors {errors}") from None


def enqueue(project: Project, job: str, inputs: list[dict[str, Any]]) -> list[str]:
    """Enqueue one execution per input, in order, one ``start`` call each."""

    async def body(q: Queue) -> list[str]:
        return [(await getattr(q.jobs, job).start(**data)).id for data in inputs]

    return client(project, body)


def spans(project: Project, log: str) -> list[tuple[str, str, int, float, float]]:
    """(label, execution id, pid, start, end) per line of a ``span`` log."""
    out = []
    for line in project.lines(log):
        label, eid, pid, start, end = line.split()
        out.append((label, eid, int(pid), float(start), float(end)))
    return out


def starts(project: Project, log: str) -> list[tuple[str, str, int, float]]:
    """(label, execution id, pid, start) per line of a ``started`` log."""
    out = []
    for line in project.lines(log):
        label, eid, pid, at = line.split()
        out.append((label, eid, int(pid), float(at)))
    return out


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The largest number of [start, end] intervals holding at one instant."""
    # at equal times an end comes before a start (-1 sorts before +1)
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = cur = 0
    for _, delta in events:
        cur += delta
        best = max(best, cur)
    return best


def most_in_window(times: list[float], period: float) -> int:
    """The most of ``times`` inside any half-open window [t, t + period)."""
    times = sorted(times)
    return max(sum(1 for u in times if t <= u < t + period) for t in times)


def outcomes(recs: list[ExecutionRecord]) -> list[tuple[Any, str, str | None]]:
    """(input i, status, reason without execution ids) per execution, oldest first."""
    ids = {r.id for r in recs}
    out = []
    for r in recs:
        reason = r.reason
        for eid in ids:
            reason = reason.replace(eid, "<id>") if reason else reason
        out.append((codec.loads(r.input)["i"], r.status, reason))
    return out


# --- start gates: concurrency window, keyed window, throttle queue, rolling ---------------


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize("project", ["sqlite", "postgres", "redis"], indirect=True)
def test_concurrency_2_holds_across_three_workers(project: Project) -> None:
    pids = start_workers(project, 3)
    ids = enqueue(project, "limited", [{"i": i} for i in range(30)])
    recs = wait_all_finished(project, "limited", 30)

    assert {r.status for r in recs} == {"completed"}, [(r.status, r.error) for r in recs]
    rows = spans(project, "limited.log")
    assert sorted(eid for _, eid, *_ in rows) == sorted(ids), "each ran exactly once"
    assert sorted(int(label) for label, *_ in rows) == list(range(30))
    # never more than 2 at once; and the limit is reached (not serialised to 1)
    assert max_overlap([(s, e) for *_, s, e in rows]) == 2
    used = Counter(pid for _, _, pid, _, _ in rows)
    assert set(used) <= set(pids)
    assert len(used) >= 2, f"the work was not shared between worker processes: {used}"


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize("project", ["sqlite", "postgres", "redis"], indirect=True)
def test_keyed_concurrency_1_per_user_across_three_workers(project: Project) -> None:
    start_workers(project, 3)
    users, n = ("ann", "bob", "cy"), 6
    enqueue(project, "per_user", [{"user": u, "i": i} for i in range(n) for u in users])
    recs = wait_all_finished(project, "per_user", len(users) * n)

    assert {r.status for r in recs} == {"completed"}, [(r.status, r.error) for r in recs]
    rows = spans(project, "per_user.log")
    assert Counter(user for user, *_ in rows) == dict.fromkeys(users, n)
    by_user: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for user, _, _, s, e in rows:
        by_user[user].append((s, e))
    for user, runs in by_user.items():
        runs.sort()
        for (_, end), (start, _) in itertools.pairwise(runs):
            assert start >= end, f"two executions of {user} overlapped"
    # different users do run in parallel
    assert any(
        s1 < e2 and s2 < e1
        for u1, u2 in itertools.combinations(users, 2)
        for s1, e1 in by_user[u1]
        for s2, e2 in by_user[u2]
    ), "no two users ever ran at the same time"


#: Handler start times are taken a little after the claim that the rule decides at (the
#: claiming process's clock, then a hop through the worker's event loop), so spacings
#: measured on them get this much slack. All processes read the same system clock.
CLOCK_SLACK = 0.02


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_throttle_queue_spaces_starts_across_three_workers(project: Project) -> None:
    start_workers(project, 3)
    enqueue(project, "spaced", [{"i": i} for i in range(6)])
    recs = wait_all_finished(project, "spaced", 6)

    assert {r.status for r in recs} == {"completed"}, [(r.status, r.error) for r in recs]
    rows = starts(project, "spaced.log")
    assert sorted(int(label) for label, *_ in rows) == list(range(6))
    recorded = {eid: at for _, eid, _, at in rows}
    assert all(recorded[r.id] >= (r.started_at or 0.0) for r in recs), "ran before its claim"
    # the rule itself, on the claim times storage recorded: no slack needed
    claimed = sorted(r.started_at or 0.0 for r in recs)
    assert min(b - a for a, b in itertools.pairwise(claimed)) >= 0.25 - 1e-6, claimed
    # and on what the handlers saw: the k-th start is at least k spacings after the first
    # claim. (Gaps between handler starts would be the wrong measure: a handler that a
    # loaded machine starts late shortens the gap to the next one, not the rule.)
    times = sorted(recorded.values())
    early = [
        (k, t - claimed[0]) for k, t in enumerate(times) if t < claimed[0] + 0.25 * k - CLOCK_SLACK
    ]
    assert not early, (early, times)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_rolling_concurrency_3_per_2s_across_three_workers(project: Project) -> None:
    start_workers(project, 3)
    enqueue(project, "rolling", [{"i": i} for i in range(9)])
    recs = wait_all_finished(project, "rolling", 9)

    assert {r.status for r in recs} == {"completed"}, [(r.status, r.error) for r in recs]
    rows = starts(project, "rolling.log")
    assert sorted(int(label) for label, *_ in rows) == list(range(9))
    # Sliding 2 s windows over the handlers' start times, shortened by a slack: a start
    # time is taken after the claim the window is decided at, by a hop through a worker's
    # event loop that a loaded 2-core machine stretches to 50-100 ms at times. A broken
    # limit starts all nine within a few ms, so 0.25 s still tells them apart.
    times = [at for *_, at in rows]
    assert most_in_window(times, 2.0 - 0.25) == 3, sorted(times)
    # the rule itself, on the claim times storage recorded
    claimed = [r.started_at or 0.0 for r in recs]
    assert most_in_window(claimed, 2.0 - 1e-6) == 3, sorted(claimed)


# --- enqueue-time rules: same outcomes with three workers as with one ---------------------


def _run_enqueue_rules(project: Project) -> dict[str, Any]:
    """Trigger each enqueue-time rule with a pattern whose outcome does not depend on
    timing; returns the outcomes once everything has finished."""
    # rate_limit "5/min": 8 triggers within a minute -> 5 accepted
    enqueue(project, "rated", [{"i": i} for i in range(8)])
    # throttle discard "1/min": 5 triggers within a minute -> the first accepted
    enqueue(project, "dropped", [{"i": i} for i in range(5)])
    # debounce "2s" trailing: 5 triggers in well under 2 s -> the last one runs
    enqueue(project, "debounced", [{"i": i} for i in range(5)])
    # singleton skip: the first runs until released; triggers while it lives are skipped
    (first,) = enqueue(project, "single", [{"i": 0}])
    project.wait_until(lambda: project.lines("single.log"), what="first singleton running")
    assert project.get(first).status == "running"
    enqueue(project, "single", [{"i": i} for i in range(1, 4)])
    return {"first_single": first}


def _finish_enqueue_rules(project: Project, first_single: str) -> dict[str, Any]:
    project.touch("release-0")
    project.wait_finished(first_single)
    # no longer live: the next trigger is accepted
    enqueue(project, "single", [{"i": 4}])
    project.touch("release-4")
    got = {
        job: outcomes(wait_all_finished(project, job, n))
        for job, n in (("rated", 8), ("dropped", 5), ("debounced", 5), ("single", 5))
    }
    got["ran"] = {
        job: sorted(int(label) for label, *_ in starts(project, f"{job}.log"))
        for job in ("rated", "dropped", "debounced", "single")
    }
    return got


EXPECTED: dict[str, Any] = {
    "rated": [(i, "completed", None) for i in range(5)]
    + [(i, "skipped", "rate_limited") for i in range(5, 8)],
    "dropped": [(0, "completed", None)] + [(i, "skipped", "throttled") for i in range(1, 5)],
    "debounced": [(i, "skipped", "debounced: replaced by <id>") for i in range(4)]
    + [(4, "completed", None)],
    "single": [(0, "completed", None)]
    + [(i, "skipped", "singleton: <id> is live") for i in range(1, 4)]
    + [(4, "completed", None)],
    "ran": {"rated": [0, 1, 2, 3, 4], "dropped": [0], "debounced": [4], "single": [0, 4]},
}


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_enqueue_time_rules_same_with_three_workers_as_with_one(
    project: Project, tmp_path: Path
) -> None:
    (tmp_path / "single").mkdir()
    alone = type(project)(tmp_path / "single")
    try:
        start_workers(project, 3)
        start_workers(alone, 1)
        # both patterns run side by side (the debounce delay is waited for once)
        many = _run_enqueue_rules(project)
        one = _run_enqueue_rules(alone)
        three_workers = _finish_enqueue_rules(project, many["first_single"])
        one_worker = _finish_enqueue_rules(alone, one["first_single"])
    finally:
        alone.stop_all()

    for job, expected in EXPECTED.items():
        assert one_worker[job] == expected, f"{job} with one worker"
        assert three_workers[job] == one_worker[job], f"{job}: three workers differ from one"
    # the debounced run got the last input
    outs = [codec.loads(r.output or "null") for r in records(project, "debounced")]
    assert outs == [None] * 4 + [4]
