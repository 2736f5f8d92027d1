"""What the dashboard's browser and security tests share (their fixtures, in
conftest.py, build on it): a real dashboard for them: ``uvicorn`` on 127.0.0.1 (a free
port, in a thread of this process) serving ``dashboard_app`` over a SQLite file, a real
``qanat worker`` subprocess running ``dashapp``'s jobs on the same file, and one headless
Debian Chromium (Playwright) per test module. A missing Chromium fails, never skips.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import uvicorn

from qanat import Queue
from qanat.dashboard import dashboard_app

T = TypeVar("T")
HERE = Path(__file__).parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: The session's folder and SQLite file, set before any test module imports ``dashapp``
#: (its queue reads $QANAT_TEST_STORAGE when it is built).
ROOT = Path(tempfile.mkdtemp(prefix="qanat-dashboard-"))
STORAGE = f"sqlite:///{ROOT / 'dash.db'}"
os.environ["QANAT_TEST_STORAGE"] = STORAGE
atexit.register(shutil.rmtree, ROOT, True)
#: The screenshots docs/dashboard.md shows.
IMAGES = HERE.parent.parent / "docs" / "images"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(check: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"{what} not met within {timeout}s (last: {value!r})")
        time.sleep(0.05)


class Served:
    """A dashboard in a uvicorn server on its own thread and event loop."""

    def __init__(self, queue: Queue, token: str | None = None, port: int | None = None) -> None:
        self.queue = queue
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        config = uvicorn.Config(
            dashboard_app(queue, token=token),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        wait_until(lambda: self.server.started, 15, "uvicorn start")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        await self.queue.start(worker=False)
        try:
            await self.server.serve()
        finally:
            await self.queue.stop()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 15.0) -> T:
        """Run a client call on the server's loop (the queue lives there)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.loop.close()


@dataclass
class Stack:
    root: Path
    storage: str
    queue: Queue
    dash: Served
    worker: subprocess.Popen[bytes]

    def record(self, eid: str) -> Any:
        return self.dash.call(self.queue.storage.get(eid))

    def status(self, eid: str) -> str:
        rec = self.record(eid)
        return "" if rec is None else str(rec.status)

    def start(self, job: str, **data: Any) -> str:
        j = self.queue.registry[job]
        return self.dash.call(self.queue.start_execution(j, (), data, {})).id

    def wait_status(self, eid: str, *statuses: str, timeout: float = 15.0) -> str:
        seen: list[str] = []

        def reached() -> str | None:
            seen.append(self.status(eid))
            return seen[-1] if seen[-1] in statuses else None

        try:
            wait_until(reached, timeout, f"execution {eid} in {statuses}")
        except AssertionError as exc:
            log = self.worker_log()[-1500:]
            raise AssertionError(f"{exc}: still {seen[-1]!r}; worker: {log}") from None
        return seen[-1]

    def worker_log(self) -> str:
        p = self.root / "worker.err"
        return p.read_text(errors="replace") if p.exists() else ""


class Watched:
    """A page whose console errors, page errors and CSP violations are collected."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.problems: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        # Devtools-injected, so the page's CSP does not apply to this listener itself.
        page.add_init_script(
            "document.addEventListener('securitypolicyviolation', e => console.error("
            "'CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI));"
        )

    def _console(self, msg: Any) -> None:
        if msg.type in ("error", "warning") and (
            msg.type == "error" or "Content Security Policy" in msg.text
        ):
            self.problems.append(f"console {msg.type}: {msg.text}")

    def check(self) -> None:
        assert not self.problems, "\n".join(self.problems)
