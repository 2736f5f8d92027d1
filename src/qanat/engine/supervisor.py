"""A supervisor for ``qanat worker --processes N``: N worker processes, kept running.

The supervisor starts N child worker processes and keeps that many running:

- a child that dies (killed, crashed, or exited on its own) is started again after a
  delay that grows while children keep dying soon after they start
  (:class:`RestartBackoff`), with a log line saying how it died;
- ``SIGTTIN`` adds a child, ``SIGTTOU`` removes one: it gets ``SIGTERM`` and drains as
  any worker does, and is not replaced;
- ``SIGTERM`` / ``SIGINT`` are forwarded to every child; the supervisor exits once all
  of them have, with the worst exit status among them (0 after a clean drain).

The loop is single-threaded and sleeps in ``select`` on a self-pipe fed by
``signal.set_wakeup_fd``: it wakes only for a signal (``SIGCHLD`` included) or when a
delayed restart is due, so nothing polls. A child notices a supervisor that disappeared
(SIGKILL, OOM) through :func:`watch_supervisor` and drains by itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Protocol

log = logging.getLogger("qanat")

#: Set in each child's environment to the supervisor's pid.
SUPERVISOR_ENV = "QANAT_SUPERVISOR_PID"

#: The signals the supervisor acts on.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
HANDLED_SIGNALS = (*STOP_SIGNALS, signal.SIGTTIN, signal.SIGTTOU, signal.SIGCHLD)


class ChildProcess(Protocol):
    """What the supervisor needs of a child: the subset of ``subprocess.Popen`` it uses."""

    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None: ...

    def send_signal(self, sig: int) -> None: ...


#: Starts one child from a command and an environment (``subprocess.Popen`` by default).
Spawn = Callable[[Sequence[str], Mapping[str, str]], ChildProcess]


def _popen(command: Sequence[str], env: Mapping[str, str]) -> ChildProcess:
    return subprocess.Popen(list(command), env=dict(env))


def spawn_passing(fds: Sequence[int]) -> Spawn:
    """A :data:`Spawn` whose children inherit the file descriptors ``fds`` (the listening
    socket of ``--metrics-port``, shared by every child)."""

    def spawn(command: Sequence[str], env: Mapping[str, str]) -> ChildProcess:
        return subprocess.Popen(list(command), env=dict(env), pass_fds=tuple(fds))

    return spawn


def describe_exit(returncode: int) -> str:
    """How a process ended, from its ``Popen.returncode``: ``"killed by SIGKILL"``,
    ``"exited with status 3"``."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exited with status {returncode}"


def exit_status(returncode: int) -> int:
    """A ``Popen.returncode`` as a shell reports it: a death by signal N is 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


@dataclass
class RestartBackoff:
    """The delay before a dead child is started again.

    Each death of a child that lived less than ``stable`` seconds doubles the delay
    (``first``, ``first * factor``, ... up to ``cap``); a death after a longer life
    starts again from ``first``. The streak is shared by all children: when every child
    dies at start-up (a broken deploy), the supervisor slows down as a whole.
    """

    first: float = 0.5
    cap: float = 30.0
    factor: float = 2.0
    stable: float = 10.0
    _streak: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.cap:
            raise ValueError(
                f"RestartBackoff needs 0 < first <= cap, got first={self.first!r}, cap={self.cap!r}"
            )
        if self.factor < 1:
            raise ValueError(f"RestartBackoff factor must be >= 1, got {self.factor!r}")
        if self.stable < 0:
            raise ValueError(f"RestartBackoff stable must be >= 0, got {self.stable!r}")

    def delay_after(self, lived: float) -> float:
        """Seconds to wait before replacing a child that died after ``lived`` seconds."""
        if lived >= self.stable:
            self._streak = 0
        # the exponent stops growing once the cap is reached, so it cannot overflow
        delay = min(self.cap, self.first * self.factor**self._streak)
        if delay < self.cap:
            self._streak += 1
        return delay


@dataclass
class _Child:
    proc: ChildProcess
    started: float
    retiring: bool = False  # removed by SIGTTOU: drains and is not replaced


def _stderr_line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Supervisor:
    """Keeps ``processes`` copies of ``command`` running until told to stop.

    :meth:`run` is the whole life: it installs the signal handlers, starts the
    children and returns the exit status once stopped. Its steps (:meth:`begin`,
    :meth:`on_signal`, :meth:`reap`, :meth:`restart_due`, :meth:`timeout`) are public
    so that a test can drive them with fake processes and a fake clock.

    Status lines (children started, added, removed, stopping) go to ``echo`` (stderr by
    default); a child's death is a warning on the ``qanat`` logger.
    """

    def __init__(
        self,
        command: Sequence[str],
        processes: int,
        *,
        env: Mapping[str, str] | None = None,
        backoff: RestartBackoff | None = None,
        spawn: Spawn = _popen,
        clock: Callable[[], float] = time.monotonic,
        echo: Callable[[str], None] = _stderr_line,
    ) -> None:
        if processes < 1:
            raise ValueError(f"a supervisor needs at least 1 process, got {processes!r}")
        self.command = list(command)
        self.wanted = processes
        self.env = dict(os.environ if env is None else env)
        self.env[SUPERVISOR_ENV] = str(os.getpid())
        self.backoff = backoff or RestartBackoff()
        self._spawn = spawn
        self._clock = clock
        self._echo = echo
        self._children: list[_Child] = []
        self._restarts: list[float] = []  # due times of replacements not yet started
        self._stopping = False
        self._stop_codes: list[int] = []  # exit statuses of children stopped by a signal
        self._stop_signals: set[int] = set()  # the stop signals forwarded so far

    # --- state ---------------------------------------------------------------------

    @property
    def pids(self) -> list[int]:
        """The pids of the children alive now, oldest first (retiring ones included)."""
        return [c.proc.pid for c in self._children]

    @property
    def stopping(self) -> bool:
        """A stop signal arrived: nothing is started any more."""
        return self._stopping

    @property
    def finished(self) -> bool:
        """Stopping and every child has exited."""
        return self._stopping and not self._children

    @property
    def exit_code(self) -> int:
        """The worst exit status of the children stopped by SIGTERM/SIGINT; 0 if all
        drained cleanly (or none was running). A child killed by the stop signal itself
        (it was still starting) counts as clean."""
        bad = [c for c in self._stop_codes if c != 0]
        return max(bad) if bad else 0

    def _say(self, text: str) -> None:
        self._echo(f"qanat supervisor {os.getpid()}: {text}")

    # --- the loop ------------------------------------------------------------------

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT and every child has exited; the exit status.

        Must run in the main thread (it installs signal handlers, and restores the old
        ones before it returns).
        """
        rfd, wfd = os.pipe()
        os.set_blocking(rfd, False)
        os.set_blocking(wfd, False)
        old_wakeup = signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
        old = {s: signal.signal(s, _record_only) for s in HANDLED_SIGNALS}
        try:
            self.begin()
            while not self.finished:
                ready, _, _ = select.select([rfd], [], [], self.timeout())
                if ready:
                    for sig in _drain(rfd):
                        self.on_signal(sig)
                self.reap()
                self.restart_due()
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for s, handler in old.items():
                signal.signal(s, handler)
            os.close(rfd)
            os.close(wfd)
        self._say(f"every worker process has exited; exit status {self.exit_code}")
        return self.exit_code

    def begin(self) -> None:
        """Start the first ``processes`` children."""
        for _ in range(self.wanted):
            self._start()
        self._say(f"{len(self._children)} worker processes ({', '.join(map(str, self.pids))})")

    def timeout(self) -> float | None:
        """Seconds until the next delayed restart is due; None if none is waiting."""
        if self._stopping or not self._restarts:
            return None
        return max(0.0, min(self._restarts) - self._clock())

    def on_signal(self, sig: int) -> None:
        """Act on one signal the loop received."""
        if sig in STOP_SIGNALS:
            self.stop(sig)
        elif sig == signal.SIGTTIN:
            self.add()
        elif sig == signal.SIGTTOU:
            self.remove()
        # SIGCHLD only wakes the loop: reap() runs after every wake-up anyway

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Forward ``sig`` to every child; start nothing any more. A second stop
        signal is forwarded again (what the children make of it is theirs to decide)."""
        if not self._stopping:
            self._say(
                f"{signal.Signals(sig).name}: stopping {len(self._children)} worker processes"
            )
        self._stopping = True
        self._stop_signals.add(sig)
        self._restarts.clear()
        for child in self._children:
            _send(child.proc, sig)

    def add(self) -> None:
        """One more child (SIGTTIN), started at once."""
        if self._stopping:
            return
        self.wanted += 1
        pid = self._start()
        if pid is not None:
            self._say(f"SIGTTIN: added worker {pid} ({self.wanted} wanted)")

    def remove(self) -> None:
        """One fewer child (SIGTTOU): a pending restart is dropped if there is one, else
        the newest child gets SIGTERM, drains and is not replaced. At least one stays."""
        if self._stopping:
            return
        if self.wanted <= 1:
            self._say("SIGTTOU ignored: at least one worker process keeps running")
            return
        self.wanted -= 1
        if self._restarts:
            self._restarts.remove(max(self._restarts))
            self._say(f"SIGTTOU: one restart cancelled ({self.wanted} wanted)")
            return
        live = [c for c in self._children if not c.retiring]
        if not live:  # every running child is already retiring; nothing more to stop
            return
        child = live[-1]  # the newest: children are kept in the order they started
        child.retiring = True
        _send(child.proc, signal.SIGTERM)
        self._say(f"SIGTTOU: stopping worker {child.proc.pid} ({self.wanted} wanted)")

    def reap(self) -> None:
        """Collect children that exited; schedule their replacements."""
        now = self._clock()
        for child in list(self._children):
            code = child.proc.poll()
            if code is None:
                continue
            self._children.remove(child)
            pid = child.proc.pid
            if self._stopping:
                # killed by the very signal it was sent: it was still starting (a worker
                # handles SIGTERM/SIGINT once it runs), so it had nothing to drain
                clean = code == 0 or -code in self._stop_signals
                self._stop_codes.append(0 if clean else exit_status(code))
                if code != 0:
                    self._say(f"worker {pid} {describe_exit(code)}")
            elif child.retiring:
                self._say(f"worker {pid} removed: {describe_exit(code)}")
            else:
                self._schedule_restart(pid, code, now - child.started)

    def restart_due(self) -> None:
        """Start the replacements whose delay has passed."""
        if self._stopping or not self._restarts:
            return
        now = self._clock()
        due = [t for t in self._restarts if t <= now]
        for t in due:
            self._restarts.remove(t)
            pid = self._start()
            if pid is not None:
                self._say(f"restarted worker {pid} ({len(self._children)} running)")

    # --- helpers -------------------------------------------------------------------

    def _schedule_restart(self, pid: int, code: int, lived: float) -> None:
        delay = self.backoff.delay_after(lived)
        self._restarts.append(self._clock() + delay)
        # exiting 0 is not a crash, but nobody asked this child to stop (the supervisor
        # did not): it is replaced like a dead one, so N processes keep running
        how = "exited with status 0 on its own" if code == 0 else f"died: {describe_exit(code)}"
        log.warning(
            "qanat supervisor %d: worker %d %s after %.1fs; restarting in %gs",
            os.getpid(),
            pid,
            how,
            lived,
            delay,
        )

    def _start(self) -> int | None:
        """Start one child; if that fails (no memory, no pids), retry after a delay."""
        try:
            proc = self._spawn(self.command, self.env)
        except OSError as exc:
            delay = self.backoff.delay_after(0.0)
            self._restarts.append(self._clock() + delay)
            log.error(
                "qanat supervisor %d: cannot start a worker process (%s); retrying in %gs",
                os.getpid(),
                exc,
                delay,
            )
            return None
        self._children.append(_Child(proc, self._clock()))
        return proc.pid


def _record_only(_sig: int, _frame: FrameType | None) -> None:
    """A Python-level handler that does nothing: the signal number reaches the loop
    through the wakeup fd, and the default action (stop, terminate) must not happen."""


def _drain(fd: int) -> list[int]:
    """The signal numbers waiting in the wakeup pipe, in order."""
    data = b""
    while True:
        try:
            chunk = os.read(fd, 512)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    return list(data)


def _send(proc: ChildProcess, sig: int) -> None:
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:  # exited between poll and kill; reap() collects it
            pass


async def watch_supervisor(on_gone: Callable[[], None], interval: float = 0.5) -> None:
    """In a child of the supervisor: call ``on_gone`` once the supervisor has
    disappeared (this process was reparented), so that the child drains by itself.
    Returns at once in a process that no supervisor started."""
    parent = os.environ.get(SUPERVISOR_ENV)
    if not parent:
        return
    # already reparented means the supervisor died before this loop began: drain too
    while os.getppid() == int(parent):
        await asyncio.sleep(interval)
    _stderr_line(f"qanat worker: supervisor {parent} is gone")
    on_gone()
