"""Helpers for the acceptance tests: the real ``qanat`` CLI and workers as subprocesses.

Each test gets a ``Project``: a temporary directory holding the app module
(``app.py``, the ``APP`` source below), a SQLite database, and the files the jobs write
to show what they did. Commands run as ``python -m qanat`` with that directory as the
current directory and on ``PYTHONPATH``. Synchronisation is always by waiting for an
observable condition (``wait_until``), never by sleeping for a guessed time.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import pytest

from node_server import NodeServer
from qanat import Queue
from qanat.storage.base import FINISHED_STATUSES, ExecutionRecord, StepRecord
from services import postgres_server, postgres_url, redis_server, redis_url

T = TypeVar("T")
#: the session's PostgreSQL and Redis servers, for project["postgres"] and ["redis"]
__all__ = ["postgres_server", "postgres_url", "redis_server", "redis_url"]

#: The app every acceptance test runs. Files go to $QANAT_TEST_DIR.
APP = r'''
import asyncio
import os
import time

import qanat
from qanat import Context, job, run, sleep

DIR = os.environ["QANAT_TEST_DIR"]


def path(name):
    return os.path.join(DIR, name)


def append(name, line):
    """One write with O_APPEND: lines from many processes never interleave."""
    fd = os.open(path(name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def wait_for_file(name, timeout=60.0):
    end = time.monotonic() + timeout
    while not os.path.exists(path(name)):
        if time.monotonic() > end:
            raise TimeoutError(f"{name} never appeared")
        time.sleep(0.01)


def numbered_step(i):
    append("steps.log", f"{i} start {os.getpid()}")
    if i == 3:
        wait_for_file("go")
    return i * 10


@job
async def five_steps(n: int) -> int:
    total = n
    for i in range(1, 6):
        total += await run(f"step{i}", numbered_step, i)
        qanat.progress(i * 20, f"step {i} of 5")
    return total


def mark(name):
    append(name, f"{os.getpid()} {time.time()!r}")
    return True


@job
async def napper(seconds: float) -> str:
    await run("before", mark, "before.log")
    await sleep(seconds)
    await run("after", mark, "after.log")
    return "awake"


@job
async def record(i: int, ctx: Context) -> int:
    start = time.time()
    await asyncio.sleep(0)
    end = time.time()
    append("work.log", f"{ctx.execution_id} {os.getpid()} {start!r} {end!r}")
    return i


async def slow_part(tag, seconds):
    """Takes ``seconds``, or until a file ``release-<tag>`` appears."""
    append("slow.log", f"{tag} start {os.getpid()}")
    end = time.monotonic() + seconds
    while time.monotonic() < end and not os.path.exists(path(f"release-{tag}")):
        await asyncio.sleep(0.01)
    append("slow.log", f"{tag} end {os.getpid()}")
    return tag


@job
async def slow(tag: str, seconds: float = 1.5) -> str:
    return await run("slow", slow_part, tag, seconds)


@job
async def add(a: int, b: int) -> int:
    qanat.progress(50, "halfway")
    qanat.log("adding", a=a, b=b)
    return await run("sum", lambda: a + b)


@job(retry=1)
async def explode(message: str) -> None:
    raise ValueError(message)


queue = qanat.Queue(
    jobs=[five_steps, napper, record, slow, add, explode],
    storage=os.environ["QANAT_TEST_STORAGE"],
)
not_a_queue = {"jobs": []}
'''


def wait_until(
    pred: Callable[[], T], timeout: float = 20.0, what: str = "condition", interval: float = 0.02
) -> T:
    """Poll ``pred`` until it returns something truthy; fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"{what} not met within {timeout}s (last value: {value!r})")
        time.sleep(interval)


class Worker:
    """A ``qanat worker`` subprocess, its output in files."""

    def __init__(self, proc: subprocess.Popen[bytes], out: Path, err: Path) -> None:
        self.proc = proc
        self.out = out
        self.err = err

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def wait_ready(self, timeout: float = 20.0, count: int = 1) -> None:
        """Wait until ``count`` workers (this one or its children) announce themselves."""

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.stderr()}")
            return self.stderr().count(" running jobs: ") >= count

        wait_until(ready, timeout, "worker start")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL, and reap."""
        self.proc.kill()
        self.proc.wait(10)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)


class Project:
    """A temporary project directory with the app, a database and the CLI."""

    wait_until = staticmethod(wait_until)

    def __init__(self, root: Path, storage_url: str | None = None) -> None:
        self.root = root
        self.db = root / "qanat.db"
        #: what the apps use (QANAT_TEST_STORAGE): this project's SQLite file by default
        self.storage_url = storage_url or f"sqlite:///{self.db}"
        (root / "app.py").write_text(APP)
        self.workers: list[Worker] = []
        self._module: ModuleType | None = None
        #: the orchestration node the project talks to (project["node"]), else None
        self.node: NodeServer | None = None

    # --- environment and commands ---------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "QANAT_APP"}
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(self.root) + (os.pathsep + path if path else "")
        env["QANAT_TEST_DIR"] = str(self.root)
        env["QANAT_TEST_DB"] = str(self.db)
        env["QANAT_TEST_STORAGE"] = self.storage_url
        env["PYTHONUNBUFFERED"] = "1"
        env.update(extra)
        return env

    def qanat(
        self,
        *args: str,
        app: str | None = "app:queue",
        timeout: float = 60.0,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``python -m qanat [-A app] args...`` to completion."""
        cmd = [sys.executable, "-m", "qanat"]
        if app is not None:
            cmd += ["-A", app]
        return subprocess.run(
            [*cmd, *args],
            cwd=self.root,
            env=env or self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def json(self, *args: str) -> Any:
        """Run a command with ``--json`` that must succeed; its parsed output."""
        res = self.qanat(*args, "--json")
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)

    def worker(
        self, *args: str, app: str = "app:queue", ready: bool = True, count: int = 1
    ) -> Worker:
        """Start ``python -m qanat worker app:queue args...`` in the background."""
        n = len(self.workers)
        out, err = self.root / f"worker{n}.out", self.root / f"worker{n}.err"
        with out.open("wb") as fo, err.open("wb") as fe:
            proc = subprocess.Popen(
                [sys.executable, "-m", "qanat", "worker", app, *args],
                cwd=self.root,
                env=self.env(),
                stdout=fo,
                stderr=fe,
            )
        w = Worker(proc, out, err)
        self.workers.append(w)
        if ready:
            w.wait_ready(count=count)
        return w

    def stop_all(self) -> None:
        for w in self.workers:
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)
        for w in self.workers:
            try:
                w.proc.wait(15)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait(5)

    # --- files the jobs write ---------------------------------------------------------

    def lines(self, name: str) -> list[str]:
        p = self.root / name
        return p.read_text().splitlines() if p.exists() else []

    def touch(self, name: str) -> None:
        (self.root / name).touch()

    # --- storage, read and written from this process -------------------------------------

    def load(self, path: Path, name: str) -> ModuleType:
        """Import an app file of this project here under a private name, with the
        environment its jobs read at import."""
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        keys = ("QANAT_TEST_DIR", "QANAT_TEST_DB", "QANAT_TEST_STORAGE")
        old = {k: os.environ.get(k) for k in keys}
        os.environ["QANAT_TEST_DIR"] = str(self.root)
        os.environ["QANAT_TEST_DB"] = str(self.db)
        os.environ["QANAT_TEST_STORAGE"] = self.storage_url
        try:
            spec.loader.exec_module(module)
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        return module

    def module(self) -> ModuleType:
        """The app module imported here under a private name (its jobs, for enqueueing)."""
        if self._module is None:
            self._module = self.load(self.root / "app.py", f"qanat_acceptance_app_{id(self)}")
        return self._module

    def client(self, body: Callable[[Queue], Awaitable[T]], app: Queue | None = None) -> T:
        """Run ``body(queue)`` against the app's queue (or ``app``'s jobs) as a client (no
        worker here)."""
        if app is None:
            app = self.module().queue
        # A fresh Queue per call: asyncio objects must not outlive their event loop.
        queue = Queue(jobs=list(app.jobs), storage=self.storage_url)

        async def go() -> T:
            await queue.start(worker=False)
            try:
                return await body(queue)
            finally:
                await queue.stop()

        return asyncio.run(go())

    def get(self, execution_id: str) -> ExecutionRecord:
        async def body(q: Queue) -> ExecutionRecord | None:
            return await q.storage.get(execution_id)

        rec = self.client(body)
        assert rec is not None, f"no execution {execution_id}"
        return rec

    def steps(self, execution_id: str) -> list[StepRecord]:
        async def body(q: Queue) -> list[StepRecord]:
            return await q.storage.steps(execution_id)

        return self.client(body)

    def wait_finished(self, execution_id: str, timeout: float = 30.0) -> ExecutionRecord:
        """The record once the execution is completed, failed, cancelled or skipped."""

        def finished() -> ExecutionRecord | None:
            rec = self.get(execution_id)
            return rec if rec.status in FINISHED_STATUSES else None

        return wait_until(finished, timeout, f"execution {execution_id} finished")

    def start(self, job: str, **data: Any) -> str:
        """Enqueue through the CLI; the new execution's id."""
        res = self.qanat("start", job, "--input", json.dumps(data))
        assert res.returncode == 0, res.stderr
        return res.stdout.strip()


_schemas = itertools.count()


@pytest.fixture
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Project]:
    """A project on SQLite; ``@pytest.mark.parametrize("project", ["sqlite", "postgres",
    "redis", "node"], indirect=True)`` runs a test on each (PostgreSQL: a fresh schema of
    the session's server; Redis: a fresh prefix of the session's server; tests/services.py;
    "node": a ``qanat serve`` subprocess over SQLite that the workers and clients reach by
    HTTP with a token, ``project.node``)."""
    backend = getattr(request, "param", "sqlite")
    url = None
    node = None
    if backend == "postgres":
        server: str = request.getfixturevalue("postgres_url")
        url = f"{server}?schema=acceptance_{os.getpid()}_{next(_schemas)}"
    elif backend == "redis":
        server = request.getfixturevalue("redis_url")
        url = f"{server}?prefix=acceptance_{os.getpid()}_{next(_schemas)}"
    elif backend == "node":
        (tmp_path / "app.py").write_text(APP)
        node = NodeServer(tmp_path, tmp_path / "node.db")
        node.start()
        url = node.url
        os.environ["QANAT_TOKEN"] = node.token or ""
    p = Project(tmp_path, url)
    p.node = node
    try:
        yield p
    finally:
        p.stop_all()
        if node is not None:
            node.stop()
            os.environ.pop("QANAT_TOKEN", None)
