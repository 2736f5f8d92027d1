"""How soon a change reaches an open dashboard page (issue 11: within 1 s).

    python benchmarks/dashboard_live.py [--rounds 10]

A dashboard in uvicorn (a thread of this process) over a SQLite file; headless Debian
Chromium (Playwright) keeps one execution's page open; this process pauses and resumes
that execution through a second storage connection, each time timing from the commit
to the moment the page shows the new status (a MutationObserver in the page stamps it,
with the page's clock, which is this machine's). Prints p50/p95/max.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn
from playwright.sync_api import sync_playwright

from qanat import Queue, job
from qanat.dashboard import dashboard_app

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@job
async def idle(n: int) -> int:
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    rounds = ap.parse_args().rounds
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'live.db'}"
        shown = Queue(jobs=[idle], storage=url)
        loop = asyncio.new_event_loop()
        server = uvicorn.Server(
            uvicorn.Config(dashboard_app(shown), port=4799, log_level="warning", lifespan="off")
        )

        async def serve() -> None:
            await shown.start(worker=False)
            await server.serve()
            await shown.stop()

        t = threading.Thread(target=lambda: loop.run_until_complete(serve()), daemon=True)
        t.start()
        while not server.started:
            time.sleep(0.05)
        # the changes are made from a loop of their own (Playwright's sync API holds one
        # in this thread)
        other = asyncio.new_event_loop()
        threading.Thread(target=other.run_forever, daemon=True).start()

        def call(coro: Any) -> Any:
            return asyncio.run_coroutine_threadsafe(coro, other).result(30)

        eid = call(_start(url))
        lat = []
        with sync_playwright() as pw:
            b = pw.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = b.new_page()
            page.goto(f"http://127.0.0.1:4799/executions/{eid}")
            for i in range(rounds):
                want = "paused" if i % 2 == 0 else "pending"
                page.evaluate(
                    """want => { window.__seen = 0; new MutationObserver((m, o) => {
                      const s = document.querySelector('#status .status');
                      if (s && s.textContent === want) {
                        window.__seen = Date.now(); o.disconnect(); }
                    }).observe(document.body, {subtree: true, childList: true}); }""",
                    want,
                )
                time.sleep(0.35 * (i % 3))  # land at different points of the poll cycle
                at = call(_act(url, eid, "pause" if want == "paused" else "resume"))
                end = time.monotonic() + 10  # (wait_for_function needs eval: the CSP forbids it)
                while not page.evaluate("window.__seen") and time.monotonic() < end:
                    time.sleep(0.02)
                lat.append(page.evaluate("window.__seen") / 1000 - at)
            b.close()
        other.call_soon_threadsafe(other.stop)
        server.should_exit = True
        t.join(10)
    lat.sort()
    print(
        f"rounds {rounds}: p50 {statistics.median(lat) * 1000:.0f} ms, "
        f"p95 {lat[min(len(lat) - 1, int(0.95 * len(lat)))] * 1000:.0f} ms, "
        f"max {lat[-1] * 1000:.0f} ms"
    )


async def _start(url: str) -> str:
    q = Queue(jobs=[idle], storage=url)
    await q.start(worker=False)
    h = await q.jobs.idle.start(n=1)
    await q.stop()
    return h.id


async def _act(url: str, eid: str, action: str) -> float:
    q = Queue(jobs=[], storage=url)
    await q.start(worker=False)
    h = q.handle_of(eid, "idle")
    await (h.pause() if action == "pause" else h.resume())
    at = time.time()
    await q.stop()
    return at


if __name__ == "__main__":
    main()
