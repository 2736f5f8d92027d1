"""Fixtures of the dashboard's browser and security tests (the pieces: dashstack.py)."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dashstack import (
    CHROMIUM,
    CHROMIUM_ARGS,
    HERE,
    ROOT,
    STORAGE,
    Served,
    Stack,
    Watched,
    wait_until,
)

from qanat import Queue


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    root, storage = ROOT, STORAGE
    sys.path.insert(0, str(HERE))
    module = importlib.import_module("dashapp")
    queue: Queue = module.queue
    assert getattr(queue.storage, "path", None) == str(ROOT / "dash.db"), (
        "dashapp imported too early"
    )
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])
    )
    env["PYTHONUNBUFFERED"] = "1"
    err = (root / "worker.err").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "qanat", "worker", "dashapp:queue", "--log-level", "info"],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=err,
    )
    dash = Served(queue)
    s = Stack(root, storage, queue, dash, worker)
    wait_until(
        lambda: " running jobs: " in s.worker_log() or worker.poll() is not None, 30, "worker start"
    )
    assert worker.poll() is None, s.worker_log()
    try:
        yield s
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:
            worker.kill()
        dash.stop()
        err.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium per test module: Playwright's sync API keeps an event loop running in
    this thread while it lives, which pytest-asyncio's tests of later modules cannot share."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install -y chromium"
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    p = context.new_page()
    w = Watched(p)
    try:
        yield w
        w.check()
    finally:
        context.close()
