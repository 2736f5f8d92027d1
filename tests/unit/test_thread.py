"""``thread`` steps: real child processes from the worker's pool (memory storage).

The functions the children run live in ``tests/thread_targets.py``. Crashes are real
(a segfault, ``os._exit``, ``MemoryError`` under RLIMIT_AS); "no child left running"
is checked in the process table by the pid the child wrote.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest

import qanat
import thread_targets as tt
from qanat import Step, job, run, sleep, thread
from qanat.engine.isolate import ProcessPool
from support import eventually

pytestmark = pytest.mark.timeout(60)


async def _status_is(h: qanat.Execution, status: str) -> bool:
    return await h.status() == status


async def test_result_is_checkpointed_as_a_thread_step_and_replay_does_not_rerun(
    make_queue: Any, tmp_path: Path
) -> None:
    runs = str(tmp_path / "runs")

    @job
    async def compute() -> list[int]:
        child = await thread("pid", tt.append_pid, runs)
        total = await thread("add", tt.add, 2, b=3)
        await sleep(0.2)  # longer than hot_sleep: the execution leaves and replays
        return [total, child]

    q = await make_queue(compute, hot_sleep=0.05)
    h = await q.jobs.compute.start()
    await eventually(lambda: _status_is(h, "waiting"))
    total, child = await h.result(timeout=10)
    assert total == 5
    assert child != os.getpid()
    assert tt.read_text(runs).split() == [str(child)]  # replay did not run it again
    steps = {s.key: s for s in await h.steps()}
    assert steps["add"].kind == "thread" and steps["add"].result == 5
    assert steps["pid"].status == "completed" and steps["pid"].attempts == 1


@pytest.mark.parametrize(
    ("fn", "memory", "says"),
    [
        (tt.segfault, None, r"killed by SIGSEGV \(signal 11\): a segmentation fault"),
        (tt.exit_3, None, "exited with code 3"),
        (tt.hog_memory, "200MB", r"ran out of memory \(MemoryError at memory=200 MB\)"),
    ],
    ids=["segfault", "os._exit", "memory"],
)
async def test_a_crash_fails_the_step_with_thread_crashed(
    make_queue: Any, fn: Any, memory: str | None, says: str
) -> None:
    @job(retry=1)
    async def crashes() -> str:
        try:
            await thread(Step("crash", retry=2, backoff=0), fn, memory=memory)
        except qanat.ThreadCrashed as exc:
            return str(exc)
        return "no crash"

    q = await make_queue(crashes)
    message = await q.jobs.crashes.run()
    assert message.startswith("thread step 'crash': the child process (pid ")
    assert fn.__name__ in message
    assert re.search(says, message), message


async def test_crashed_attempts_are_recorded_and_retried_per_step(make_queue: Any) -> None:
    @job(retry=1)
    async def crashes() -> None:
        await thread(Step("crash", retry=2, backoff=0), tt.exit_3)

    q = await make_queue(crashes)
    h = await q.jobs.crashes.start()
    with pytest.raises(qanat.ThreadCrashed, match="exited with code 3"):
        await h.result(timeout=10)
    [step] = await h.steps()
    assert (step.kind, step.status, step.attempts) == ("thread", "failed", 2)
    assert step.error is not None and step.error["type"] == "ThreadCrashed"


async def test_retry_after_a_crash_runs_in_a_new_child_and_succeeds(
    make_queue: Any, tmp_path: Path
) -> None:
    marker = str(tmp_path / "crashed-once")

    @job
    async def flaky() -> int:
        return int(await thread(Step("flaky", retry=2, backoff=0), tt.crash_once, marker))

    q = await make_queue(flaky)
    h = await q.jobs.flaky.start()
    second = await h.result(timeout=10)
    first = int(tt.read_text(marker))
    assert second != first  # the pool replaced the dead child
    assert not tt.alive(first)
    [step] = await h.steps()
    assert (step.status, step.attempts) == ("completed", 2)


async def test_timeout_kills_the_child_before_the_step_ends(
    make_queue: Any, tmp_path: Path
) -> None:
    pidfile = str(tmp_path / "pid")

    @job(retry=1)
    async def slow() -> bool:
        try:
            await thread(Step("nap", retry=1, timeout=0.5), tt.write_pid_and_sleep, pidfile, 30)
        except qanat.Timeout:
            return tt.alive(int(tt.read_text(pidfile)))  # the step has ended here
        return True

    q = await make_queue(slow)
    assert await q.jobs.slow.run() is False
    assert not tt.alive(int(tt.read_text(pidfile)))


async def test_cancel_kills_the_child(make_queue: Any, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"

    @job
    async def slow() -> int:
        return int(await thread("nap", tt.write_pid_and_sleep, str(pidfile), 30))

    q = await make_queue(slow)
    h = await q.jobs.slow.start()
    await eventually(lambda: _exists(pidfile))
    child = int(tt.read_text(pidfile))
    assert tt.alive(child)
    await h.cancel()
    with pytest.raises(qanat.Cancelled):
        await h.result(timeout=10)
    await eventually(lambda: _gone(child), timeout=5)  # well before its 30 s sleep ends
    await eventually(lambda: _pool_has_no(q, child), timeout=5)


async def _exists(p: Path) -> bool:
    return bool(tt.read_text(p))


async def _gone(pid: int) -> bool:
    return not tt.alive(pid)


async def _pool_has_no(q: qanat.Queue, pid: int) -> bool:
    assert q.worker is not None
    return pid not in q.worker.process_pool().pids()


async def test_other_executions_carry_on_while_thread_children_crash(
    make_queue: Any, tmp_path: Path
) -> None:
    @job(retry=1)
    async def crasher(i: int) -> None:
        await thread(Step("boom", retry=2, backoff=0), tt.segfault if i % 2 else tt.exit_3)

    @job
    async def worker_side(i: int) -> int:
        a = await run("here", lambda: i)
        b = await thread("there", tt.add, i, 1)
        return int(a + b)

    q = await make_queue(crasher, worker_side, threads=2)
    crashes = [await q.jobs.crasher.start(i) for i in range(6)]
    fine = [await q.jobs.worker_side.start(i) for i in range(10)]
    assert [await h.result(timeout=20) for h in fine] == [2 * i + 1 for i in range(10)]
    for h in crashes:
        with pytest.raises(qanat.ThreadCrashed):
            await h.result(timeout=20)
    assert q.worker is not None and len(q.worker.process_pool().pids()) <= 2


async def test_replay_meeting_a_run_where_a_thread_was_recorded_is_nondeterminism(
    make_queue: Any,
) -> None:
    @job(name="changing", retry=3)
    async def v1() -> str:
        await thread("a", tt.add, 1, 2)
        await sleep(0.2)
        return "v1"

    async def v2() -> str:
        await run("a", tt.add, 1, 2)  # a run step where the record has a thread step
        return "v2"

    q = await make_queue(v1, hot_sleep=0.01)
    h = await q.jobs.changing.start()
    await eventually(lambda: _status_is(h, "waiting"))
    v1.handler = v2
    with pytest.raises(
        qanat.NonDeterminism, match="recorded as thread 'a' but the code now calls run 'a'"
    ):
        await h.result(timeout=5)


async def test_replay_meeting_a_thread_where_a_run_was_recorded_is_nondeterminism(
    make_queue: Any,
) -> None:
    @job(name="changing", retry=3)
    async def v1() -> str:
        await run("a", tt.add, 1, 2)
        await sleep(0.2)
        return "v1"

    async def v2() -> str:
        await thread("a", tt.add, 1, 2)
        return "v2"

    q = await make_queue(v1, hot_sleep=0.01)
    h = await q.jobs.changing.start()
    await eventually(lambda: _status_is(h, "waiting"))
    v1.handler = v2
    with pytest.raises(
        qanat.NonDeterminism, match="recorded as run 'a' but the code now calls thread 'a'"
    ):
        await h.result(timeout=5)


async def test_sync_thread_in_a_plain_def_handler(make_queue: Any) -> None:
    @job
    def plain(a: int) -> list[int]:
        return [qanat.sync.thread("add", tt.add, a, 10), qanat.sync.thread("pid", tt.pid)]

    q = await make_queue(plain)
    h = await q.jobs.plain.start(5)
    total, child = await h.result(timeout=10)
    assert total == 15 and child != os.getpid()
    assert [s.kind for s in await h.steps()] == ["thread", "thread"]


async def test_children_are_reused_and_queue_threads_caps_them(
    make_queue: Any, tmp_path: Path
) -> None:
    runs = str(tmp_path / "runs")

    @job
    async def many(n: int) -> int:
        for i in range(n):
            await thread(f"p{i}", tt.append_pid, runs)
        return n

    q = await make_queue(many, threads=1)
    hs = [await q.jobs.many.start(3) for _ in range(3)]
    assert [await h.result(timeout=20) for h in hs] == [3, 3, 3]
    pids = tt.read_text(runs).split()
    assert len(pids) == 9 and len(set(pids)) == 1  # one child, reused, for all nine


async def test_an_error_in_fn_is_raised_with_its_type_and_the_child_traceback(
    make_queue: Any,
) -> None:
    @job(retry=1)
    async def bad() -> list[str]:
        try:
            await thread(Step("f", retry=2, backoff=0), tt.fail, "no good")
        except ValueError as exc:
            return [str(exc), *getattr(exc, "__notes__", [])]
        return []

    q = await make_queue(bad)
    h = await q.jobs.bad.start()
    message, note = await h.result(timeout=10)
    assert message == "no good"
    assert "in the thread child process (pid " in note and "in fail" in note
    [step] = await h.steps()
    assert step.attempts == 2 and step.error is not None and step.error["type"] == "ValueError"


async def test_a_function_that_cannot_be_pickled_is_a_clear_error_not_retried(
    make_queue: Any,
) -> None:
    @job(retry=1)
    async def local() -> None:
        await thread("lambda", lambda: 1)

    q = await make_queue(local)
    h = await q.jobs.local.start()
    with pytest.raises(TypeError, match="must be picklable to cross into the child process"):
        await h.result(timeout=10)
    [step] = await h.steps()
    assert step.attempts == 1


async def test_bad_memory_is_refused_naming_it(make_queue: Any) -> None:
    @job(retry=1)
    async def odd() -> None:
        await thread("f", tt.add, 1, 2, memory="3 lightyears")

    q = await make_queue(odd)
    with pytest.raises(ValueError, match="thread step 'f': memory: '3 lightyears' is not a size"):
        await q.jobs.odd.run()


async def test_thread_outside_a_job_raises_not_in_job() -> None:
    with pytest.raises(qanat.NotInJob, match=r"qanat.thread\(\) was called outside"):
        await thread("x", tt.add, 1, 2)


async def test_stopping_the_worker_kills_its_children(make_queue: Any, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"

    @job
    async def slow() -> int:
        return int(await thread("nap", tt.write_pid_and_sleep, str(pidfile), 30))

    q = await make_queue(slow)
    await q.jobs.slow.start()
    await eventually(lambda: _exists(pidfile))
    child = int(tt.read_text(pidfile))
    await q.stop(grace=0.2)
    assert not tt.alive(child)


async def test_pool_children_are_not_forks_of_the_worker() -> None:
    pool = ProcessPool(1)
    try:
        parent = await pool.call(os.getppid, (), {})
        assert pool.start_method in {"forkserver", "spawn"}
        if pool.start_method == "forkserver":
            assert parent != os.getpid()  # forked by the clean server, not by this process
    finally:
        pool.shutdown()


async def test_pool_queues_tasks_and_a_crash_fails_only_its_own(tmp_path: Path) -> None:
    pool = ProcessPool(1)
    try:
        results = await asyncio.gather(
            pool.call(tt.add, (1, 2), {}),
            pool.call(tt.segfault, (), {}),
            pool.call(tt.add, (3, 4), {}),
            return_exceptions=True,
        )
        assert results[0] == 3 and results[2] == 7
        assert isinstance(results[1], qanat.ThreadCrashed)
        # a task cancelled while it waits for the only child gives its turn to the next
        pidfile = str(tmp_path / "pid")
        busy = asyncio.ensure_future(pool.call(tt.write_pid_and_sleep, (pidfile, 0.5), {}))
        waiting = asyncio.ensure_future(pool.call(tt.add, (0, 0), {}))
        after = asyncio.ensure_future(pool.call(tt.add, (5, 5), {}))
        await eventually(lambda: _exists(Path(pidfile)))
        waiting.cancel()
        assert await asyncio.wait_for(after, 10) == 10
        assert await busy > 0 and waiting.cancelled()
        assert len(pool.pids()) == 1
    finally:
        pool.shutdown()


async def test_an_async_fn_runs_on_its_own_loop_in_the_child(make_queue: Any) -> None:
    @job
    async def uses_async() -> int:
        return int(await thread("add", tt.add_async, 20, 22))

    q = await make_queue(uses_async)
    assert await q.jobs.uses_async.run() == 42


async def test_a_result_that_cannot_be_pickled_back_is_a_type_error(make_queue: Any) -> None:
    @job(retry=1)
    async def returns_lock() -> None:
        await thread("lock", tt.unpicklable_result)

    q = await make_queue(returns_lock)
    h = await q.jobs.returns_lock.start()
    with pytest.raises(TypeError, match="cannot be pickled back to the worker"):
        await h.result(timeout=10)
    [step] = await h.steps()
    assert step.attempts == 1  # a TypeError is not retried


async def test_an_idle_child_killed_from_outside_is_replaced_without_failing_a_task() -> None:
    pool = ProcessPool(1)
    try:
        first = await pool.call(tt.pid, (), {})
        os.kill(first, signal.SIGKILL)
        await eventually(lambda: _gone(first))
        second = await pool.call(tt.pid, (), {})
        assert second != first and pool.pids() == [second]
    finally:
        pool.shutdown()
