"""The app the dashboard's browser and security tests run: a worker subprocess runs its
jobs (``python -m qanat worker dashapp:queue``), the dashboard under test reads the same
SQLite file ($QANAT_TEST_STORAGE)."""

from __future__ import annotations

import os

import qanat
from qanat import Pipe, job, run, sleep

#: What an attacker puts in everything a job makes: each must show as inert text.
XSS = (
    '<script>window.__xss = 1</script>"><img src=x onerror="window.__xss = 2">'
    "javascript:window.__xss = 3"
)
#: A step name carries it too (step names may not contain ":").
XSS_STEP = '<script>window.__xss = 4</script>"><img src=x onerror="window.__xss = 5">'

approvals = Pipe("approvals")


@job(retry=1)
async def nap(seconds: float = 60) -> str:
    """Sleeps durably: ``waiting`` until cancelled or woken."""
    await run("before", lambda: "ready")
    await sleep(seconds)
    return "rested"


@job(retry=1)
async def pipeline(n: int = 4) -> int:
    total = 0
    for i in range(n):
        total += await run("add", lambda i=i: i)
    await run("square", lambda: total * total)
    qanat.log("added up", total=total)
    return total


@job(retry=1)
async def flaky(message: str) -> str:
    await run("try", lambda: "tried")
    raise RuntimeError(message)


@job(retry=1)
async def order(order_id: int) -> str:
    got = await approvals.wait_for({"order_id": order_id}, timeout="1h")
    return f"order {order_id}: {'approved' if got else 'timed out'}"


@job(retry=1)
async def evil(text: str) -> str:
    qanat.log(text, payload=text)
    await run(XSS_STEP, lambda: text)
    raise ValueError(text)


queue = qanat.Queue(
    jobs=[nap, pipeline, flaky, order, evil],
    pipes=[approvals],
    storage=os.environ.get("QANAT_TEST_STORAGE", "sqlite:///dash.db"),
)
