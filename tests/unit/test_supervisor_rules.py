"""The supervisor's rules, driven step by step with fake processes and a fake clock.

The real loop (signals, select, child processes) is exercised in
tests/acceptance/test_supervisor.py; here each decision is checked on its own.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Mapping, Sequence

import pytest

from qanat.engine.supervisor import (
    SUPERVISOR_ENV,
    RestartBackoff,
    Supervisor,
    describe_exit,
    exit_status,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeProc:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.signals: list[int] = []

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, sig: int) -> None:
        self.signals.append(sig)

    def die(self, code: int) -> None:
        self.returncode = code


class Spawner:
    def __init__(self) -> None:
        self.procs: list[FakeProc] = []
        self.envs: list[Mapping[str, str]] = []
        self.fail_next = 0

    def __call__(self, command: Sequence[str], env: Mapping[str, str]) -> FakeProc:
        assert list(command) == ["worker", "app:queue"]
        if self.fail_next:
            self.fail_next -= 1
            raise OSError(11, "Resource temporarily unavailable")
        p = FakeProc(100 + len(self.procs))
        self.procs.append(p)
        self.envs.append(env)
        return p


def make(n: int = 2, **backoff: float) -> tuple[Supervisor, Spawner, FakeClock, list[str]]:
    spawner, clock, lines = Spawner(), FakeClock(), []
    sup = Supervisor(
        ["worker", "app:queue"],
        n,
        env={"PATH": "/bin"},
        backoff=RestartBackoff(**backoff),
        spawn=spawner,
        clock=clock,
        echo=lines.append,
    )
    sup.begin()
    return sup, spawner, clock, lines


# --- the delay policy ----------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap_while_children_die_young() -> None:
    b = RestartBackoff(first=0.5, cap=30.0, stable=10.0)
    delays = [b.delay_after(lived=1.0) for _ in range(9)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_backoff_starts_over_after_a_child_lived_long_enough() -> None:
    b = RestartBackoff(first=0.5, cap=30.0, stable=10.0)
    assert [b.delay_after(1.0) for _ in range(4)] == [0.5, 1.0, 2.0, 4.0]
    assert b.delay_after(10.0) == 0.5
    assert b.delay_after(9.9) == 1.0


def test_backoff_cap_does_not_overflow_after_many_deaths() -> None:
    b = RestartBackoff(first=0.5, cap=30.0)
    assert {b.delay_after(0.0) for _ in range(5000)} >= {30.0}
    assert b.delay_after(0.0) == 30.0


@pytest.mark.parametrize(
    ("options", "word"),
    [({"first": 0.0}, "first"), ({"first": 5.0, "cap": 1.0}, "cap"), ({"factor": 0.5}, "factor")],
)
def test_backoff_rejects_bad_settings(options: dict[str, float], word: str) -> None:
    with pytest.raises(ValueError, match=word):
        RestartBackoff(**options)


def test_exit_descriptions() -> None:
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(3) == "exited with status 3"
    assert describe_exit(-99) == "killed by signal 99"
    assert exit_status(-signal.SIGKILL) == 137 and exit_status(2) == 2


# --- the supervisor ------------------------------------------------------------------


def test_begin_starts_n_children_that_know_their_supervisor() -> None:
    sup, spawner, _, lines = make(3)
    assert sup.pids == [100, 101, 102]
    assert all(env[SUPERVISOR_ENV].isdigit() and env["PATH"] == "/bin" for env in spawner.envs)
    assert "3 worker processes (100, 101, 102)" in lines[0]
    assert sup.timeout() is None  # nothing due: the loop sleeps until a signal


def test_dead_child_is_replaced_after_the_delay_with_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sup, spawner, clock, lines = make(2)
    clock.advance(2.0)
    spawner.procs[0].die(-signal.SIGKILL)
    with caplog.at_level(logging.WARNING, logger="qanat"):
        sup.reap()
    assert sup.pids == [101]
    assert "worker 100 died: killed by SIGKILL after 2.0s; restarting in 0.5s" in caplog.text
    assert sup.timeout() == pytest.approx(0.5)
    clock.advance(0.4)
    sup.restart_due()
    assert sup.pids == [101], "restarted before its delay"
    clock.advance(0.1)
    sup.restart_due()
    assert sup.pids == [101, 102]
    assert lines[-1].endswith("restarted worker 102 (2 running)")
    assert sup.timeout() is None


def test_children_dying_young_get_growing_delays(caplog: pytest.LogCaptureFixture) -> None:
    sup, spawner, clock, _ = make(2, stable=10.0)
    delays = []
    for _ in range(5):
        clock.advance(1.0)
        spawner.procs[-1].die(3)
        sup.reap()
        timeout = sup.timeout()
        assert timeout is not None
        delays.append(timeout)
        clock.advance(timeout)
        sup.restart_due()
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert "died: exited with status 3" in caplog.text
    # a child that lived past ``stable`` resets the streak
    clock.advance(60.0)
    spawner.procs[-1].die(1)
    sup.reap()
    assert sup.timeout() == 0.5


def test_child_exiting_zero_on_its_own_is_replaced(caplog: pytest.LogCaptureFixture) -> None:
    sup, spawner, clock, _ = make(2)
    spawner.procs[1].die(0)
    sup.reap()
    assert "worker 101 exited with status 0 on its own" in caplog.text
    clock.advance(0.5)
    sup.restart_due()
    assert sup.pids == [100, 102]


def test_sigttin_adds_a_child_at_once() -> None:
    sup, _, _, lines = make(2)
    sup.on_signal(signal.SIGTTIN)
    assert sup.pids == [100, 101, 102] and sup.wanted == 3
    assert "SIGTTIN: added worker 102 (3 wanted)" in lines[-1]


def test_sigttou_drains_the_newest_child_and_does_not_replace_it() -> None:
    sup, spawner, clock, lines = make(3)
    clock.advance(1.0)
    sup.on_signal(signal.SIGTTIN)  # 103 is the newest
    sup.on_signal(signal.SIGTTOU)
    assert spawner.procs[3].signals == [signal.SIGTERM]
    assert all(not p.signals for p in spawner.procs[:3])
    assert "SIGTTOU: stopping worker 103 (3 wanted)" in lines[-1]
    spawner.procs[3].die(0)
    sup.reap()
    assert sup.pids == [100, 101, 102] and sup.timeout() is None
    assert "worker 103 removed: exited with status 0" in lines[-1]
    # a second SIGTTOU picks another child, not the one already retiring
    sup.on_signal(signal.SIGTTOU)
    assert spawner.procs[2].signals == [signal.SIGTERM]


def test_sigttou_cancels_a_pending_restart_before_stopping_a_child() -> None:
    sup, spawner, clock, _ = make(2)
    spawner.procs[0].die(-signal.SIGSEGV)
    sup.reap()
    sup.on_signal(signal.SIGTTOU)
    assert not spawner.procs[1].signals
    clock.advance(60.0)
    sup.restart_due()
    assert sup.pids == [101] and sup.wanted == 1


def test_sigttou_keeps_at_least_one_child() -> None:
    sup, spawner, _, lines = make(2)
    sup.on_signal(signal.SIGTTOU)
    sup.on_signal(signal.SIGTTOU)
    assert sup.wanted == 1
    assert [p.signals for p in spawner.procs] == [[], [signal.SIGTERM]]
    assert "SIGTTOU ignored" in lines[-1]


def test_sigterm_forwards_to_all_and_nothing_restarts() -> None:
    sup, spawner, clock, lines = make(3)
    spawner.procs[0].die(-signal.SIGKILL)
    sup.reap()  # a restart is pending
    sup.on_signal(signal.SIGTERM)
    assert [p.signals for p in spawner.procs[1:]] == [[signal.SIGTERM], [signal.SIGTERM]]
    assert "SIGTERM: stopping 2 worker processes" in lines[-1]
    assert sup.timeout() is None and not sup.finished
    clock.advance(60.0)
    sup.restart_due()
    sup.on_signal(signal.SIGTTIN)
    assert len(spawner.procs) == 3, "started a process while stopping"
    spawner.procs[1].die(0)
    sup.reap()
    assert not sup.finished
    spawner.procs[2].die(0)
    sup.reap()
    assert sup.finished and sup.exit_code == 0  # the death before the stop does not count


def test_exit_code_is_the_worst_of_the_stopped_children() -> None:
    sup, spawner, _, _ = make(3)
    sup.on_signal(signal.SIGINT)
    assert all(p.signals == [signal.SIGINT] for p in spawner.procs)
    spawner.procs[0].die(0)
    spawner.procs[1].die(1)
    spawner.procs[2].die(-signal.SIGKILL)
    sup.reap()
    assert sup.finished and sup.exit_code == 137


def test_a_child_killed_by_the_forwarded_stop_signal_counts_as_clean() -> None:
    # a child still starting has no handler yet: the SIGTERM kills it, nothing is lost
    sup, spawner, _, _ = make(2)
    sup.on_signal(signal.SIGTERM)
    spawner.procs[0].die(-signal.SIGTERM)
    spawner.procs[1].die(0)
    sup.reap()
    assert sup.finished and sup.exit_code == 0


def test_a_failed_spawn_is_retried_after_a_delay(caplog: pytest.LogCaptureFixture) -> None:
    sup, spawner, clock, _ = make(1)
    spawner.fail_next = 1
    sup.on_signal(signal.SIGTTIN)
    assert sup.pids == [100]
    assert "cannot start a worker process" in caplog.text
    assert sup.timeout() == 0.5
    clock.advance(0.5)
    sup.restart_due()
    assert sup.pids == [100, 101]


def test_needs_at_least_one_process() -> None:
    with pytest.raises(ValueError, match="at least 1 process"):
        Supervisor(["x"], 0)
