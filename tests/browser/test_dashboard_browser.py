"""The dashboard in a real browser (headless Debian Chromium through Playwright) over a
real uvicorn, a SQLite file and a real worker subprocess: list, filters, an execution's
timeline, Cancel, a send from the pipe form that wakes a waiting execution, a bulk
retry, the other pages. Any console error or CSP violation fails the test (``page``
fixture). Screenshots go to docs/images/ for docs/dashboard.md."""

from __future__ import annotations

import re
from typing import Any

from dashstack import IMAGES, Served, Stack, Watched

from qanat import Queue

TIMEOUT = 10_000  # ms: what a page may take to show a change (live updates: < 1 s)


def shot(page: Any, name: str) -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(IMAGES / f"dashboard-{name}.png"), full_page=False)


def test_list_filter_and_timeline(stack: Stack, page: Watched) -> None:
    p = page.page
    done = stack.start("pipeline", n=6)
    stack.wait_status(done, "completed")
    failed = stack.start("flaky", message="boom for the list")
    stack.wait_status(failed, "failed")

    p.goto(stack.dash.url + "/")
    p.locator(f'tr[data-id="{done}"]').wait_for(timeout=TIMEOUT)
    shot(p, "executions")
    p.select_option("#f-status", "failed")
    p.click("#f-apply")
    p.wait_for_url(re.compile(r"status=failed"))
    assert p.locator(f'tr[data-id="{failed}"]').count() == 1
    assert p.locator(f'tr[data-id="{done}"]').count() == 0
    # search by input text, then by id
    p.goto(stack.dash.url + "/?search=boom+for+the")
    assert p.locator(f'tr[data-id="{failed}"]').count() == 1
    assert p.locator("tbody tr[data-id]").count() == 1

    p.goto(stack.dash.url + "/?job=pipeline")
    p.click(f'tr[data-id="{done}"] a.eid')
    p.wait_for_url(re.compile(done))
    assert p.locator("#status").inner_text().startswith("completed")
    bars = p.locator("svg.gantt g.step")
    assert bars.count() == 7  # add x6 (add, add#2, ...) and square
    assert p.locator('svg.gantt g.step[data-step="add#6"]').count() == 1
    # each step's line is marked in the source beside the timeline
    marked = p.locator("pre.code .marked")
    assert marked.count() == 2
    assert '"add"' in marked.nth(0).inner_text() and '"square"' in marked.nth(1).inner_text()
    assert "added up" in p.locator("#logs").inner_text()
    shot(p, "execution")

    p.goto(stack.dash.url + f"/executions/{failed}")
    assert "RuntimeError: boom for the list" in p.locator("#error").inner_text()
    assert "Traceback" in p.locator("#traceback").inner_text()


def test_cancel_a_sleeping_execution(stack: Stack, page: Watched) -> None:
    p = page.page
    eid = stack.start("nap", seconds=600)
    stack.wait_status(eid, "waiting")
    p.goto(stack.dash.url + f"/executions/{eid}")
    assert p.locator("#status").inner_text().startswith("waiting")
    p.click("#do-cancel")
    p.wait_for_url(re.compile(rf"/executions/{eid}\?done="))
    p.locator("#status .s-cancelled").wait_for(timeout=TIMEOUT)
    assert stack.status(eid) == "cancelled"


def test_live_update_reaches_an_open_page(stack: Stack, page: Watched) -> None:
    p = page.page
    eid = stack.start("nap", seconds=600)
    stack.wait_status(eid, "waiting")
    p.goto(stack.dash.url + f"/executions/{eid}")
    p.locator("#status .s-waiting").wait_for(timeout=TIMEOUT)
    stack.dash.call(stack.queue.cancel_ids([eid], "from the test"))  # not through the page
    # polled every 0.8 s: the page shows it without a reload within about a second
    p.locator("#status .s-cancelled").wait_for(timeout=2_500)
    assert "from the test" in p.locator("#status").inner_text()


def test_send_event_wakes_the_waiting_execution(stack: Stack, page: Watched) -> None:
    p = page.page
    eid = stack.start("order", order_id=4242)
    stack.wait_status(eid, "waiting")
    p.goto(stack.dash.url + "/pipes")
    row = p.locator("#waiting tr", has_text=eid)
    row.wait_for(timeout=TIMEOUT)
    assert '{"order_id": 4242}' in row.inner_text()
    shot(p, "pipes")
    p.fill("#send-1", '{"order_id": 4242, "ok": true}')
    p.click("#send-btn-1")
    p.wait_for_url(re.compile(r"/pipes\?done="))
    assert "woke 1" in p.locator("#flash").inner_text()
    stack.wait_status(eid, "completed")
    p.locator("#events a.woke", has_text=eid).wait_for(timeout=TIMEOUT)


def test_bulk_retry_states_the_count(stack: Stack, page: Watched) -> None:
    p = page.page
    ids = [stack.start("flaky", message=f"bulk-{i}") for i in range(3)]
    for eid in ids:
        stack.wait_status(eid, "failed")
    p.goto(stack.dash.url + "/?search=bulk-&status=failed")
    assert p.locator("tbody tr[data-id]").count() == 3
    p.click("#bulk-retry")
    p.wait_for_url(re.compile(r"/executions/bulk\?"))
    assert "retry 3 execution(s)" in p.locator("#bulk-confirm").inner_text()
    shot(p, "bulk")
    before = {eid: stack.record(eid).attempt for eid in ids}
    p.click("#bulk-confirm")
    p.wait_for_url(re.compile(r"done="))
    assert "retry: 3 execution(s) changed" in p.locator("#flash").inner_text()
    for eid in ids:  # retried from the start: they run again and fail again
        stack.wait_status(eid, "pending", "running", "failed")
        assert stack.record(eid).attempt <= before[eid]
    for eid in ids:
        stack.wait_status(eid, "failed")


def test_other_pages_render(stack: Stack, page: Watched) -> None:
    p = page.page
    eid = stack.start("nap", seconds=600)
    stack.wait_status(eid, "waiting")
    p.goto(stack.dash.url + "/jobs")
    assert p.locator(".job h2", has_text="pipeline").count() == 1
    shot(p, "jobs")
    p.fill("#start-2", '{"n": 2}')  # jobs sorted: evil, flaky, nap, order, pipeline
    p.goto(stack.dash.url + "/jobs")
    p.goto(stack.dash.url + "/workers")
    p.locator("#workers tr", has_text=eid).count()
    assert p.locator("#workers tbody tr").count() >= 1
    shot(p, "workers")
    p.goto(stack.dash.url + "/charts")
    p.locator("svg.bars").first.wait_for(timeout=TIMEOUT)
    shot(p, "charts")
    p.goto(stack.dash.url + "/cron")
    assert "no cron jobs" in p.locator("#cron").inner_text()
    stack.dash.call(stack.queue.cancel_ids([eid]))


def test_start_from_the_jobs_page(stack: Stack, page: Watched) -> None:
    p = page.page
    p.goto(stack.dash.url + "/jobs")
    form = p.locator("form.start", has_text="pipeline")
    form.locator("textarea").fill('{"n": 3}')
    form.locator("button").click()
    p.wait_for_url(re.compile(r"/executions/\w+\?done=started"))
    eid = p.url.split("/executions/")[1].split("?")[0]
    stack.wait_status(eid, "completed")
    p.locator("#status .s-completed").wait_for(timeout=TIMEOUT)
    assert p.locator("#output").inner_text().strip() == "3"


def test_an_open_page_survives_a_server_restart(stack: Stack, page: Watched) -> None:
    p = page.page
    eid = stack.start("nap", seconds=600)
    stack.wait_status(eid, "waiting")
    first = Served(Queue(storage=stack.storage, name="restart"))
    p.goto(first.url + f"/executions/{eid}")
    p.locator("#status .s-waiting").wait_for(timeout=TIMEOUT)
    first.stop()
    p.locator("#live-state.down").wait_for(timeout=TIMEOUT)  # it says it lost the server
    page.problems.clear()  # the failed polls while it was down are logged as errors
    second = Served(Queue(storage=stack.storage, name="restart"), port=first.port)
    try:
        p.locator("#live-state:not(.down)").wait_for(timeout=TIMEOUT)
        stack.dash.call(stack.queue.cancel_ids([eid], "after the restart"))
        p.locator("#status .s-cancelled").wait_for(timeout=TIMEOUT)
        # and its forms still work: the CSRF cookie outlived the server
        p.click("#do-retry")
        p.wait_for_url(re.compile(r"done=retry"))
        assert "retry: now pending" in p.locator("#flash").inner_text()
    finally:
        second.stop()
    stack.wait_status(eid, "waiting", "running")
    stack.dash.call(stack.queue.cancel_ids([eid]))
