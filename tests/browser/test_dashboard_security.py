"""The dashboard's security by default (issue 11 part 4, SPEC §11), against the real
server of ``conftest.stack``: job-made payloads render inert (in the DOM and in the raw
HTML), state changes need POST from our origin with the CSRF token (refused: 403 and
nothing changed), GET never changes anything, a token-protected dashboard shows nothing
without it, and a non-loopback bind without a token is refused at start."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

import httpx
import pytest
from dashapp import XSS, XSS_STEP
from dashstack import HERE, Served, Stack, Watched

from qanat import Queue
from qanat.dashboard.security import CSP

TOKEN = "s3cret-token-for-tests"


def _csrf(client: httpx.Client, path: str) -> str:
    page = client.get(path)
    m = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert m, page.text[:500]
    return m.group(1)


@pytest.fixture(scope="module")
def evil(stack: Stack) -> dict[str, str]:
    """An execution whose input, error, log line and step name carry the payloads, and an
    event whose data does."""
    eid = stack.start("evil", text=XSS)
    stack.wait_status(eid, "failed")
    pipe = stack.queue.pipe_registry["approvals"]
    event = stack.dash.call(stack.queue.send_event(pipe, {"note": XSS, "order_id": -1}))
    return {"execution": eid, "event": event.id}


def test_payloads_render_inert_in_the_browser(
    stack: Stack, page: Watched, evil: dict[str, str]
) -> None:
    p = page.page
    for path in (
        "/",
        f"/?search={evil['execution']}",
        f"/executions/{evil['execution']}",
        "/pipes",
    ):
        p.goto(stack.dash.url + path)
        p.wait_for_load_state("load")
        assert p.evaluate("typeof window.__xss") == "undefined", path
        assert p.evaluate("document.images.length") == 0, path
        assert p.evaluate("document.scripts.length") == 1, path  # our app.js only
        hrefs = p.evaluate(
            "[...document.querySelectorAll('[href],[src]')]"
            ".map(e => e.getAttribute('href') || e.getAttribute('src'))"
        )
        assert not [h for h in hrefs if h.strip().lower().startswith("javascript:")], path
    p.goto(stack.dash.url + f"/executions/{evil['execution']}")
    # shown as text, exactly as the job made it
    assert json.dumps(XSS)[1:-1] in p.locator("#input").inner_text()  # JSON text
    assert XSS in p.locator("#error").inner_text()
    assert XSS in p.locator("#logs").inner_text()
    keys = p.evaluate("[...document.querySelectorAll('svg.gantt g.step')].map(g => g.dataset.step)")
    assert keys == [XSS_STEP]
    assert XSS_STEP in p.locator("table.steps").inner_text()
    p.goto(stack.dash.url + "/pipes")
    assert "window.__xss = 1" in p.locator("#events").inner_text()


def test_payloads_escaped_in_the_raw_html(stack: Stack, evil: dict[str, str]) -> None:
    with httpx.Client(base_url=stack.dash.url) as c:
        for path in ("/", f"/executions/{evil['execution']}", "/pipes"):
            html = c.get(path).text
            assert "<script>window.__xss" not in html, path
            assert "<img" not in html, path
            assert 'onerror="window' not in html, path
            assert (
                "&lt;script&gt;window.__xss = 1&lt;/script&gt;" in html
                or "&#34;&gt;&lt;img" in html
            ), path


def test_headers_csp_no_store_no_cors(stack: Stack) -> None:
    with httpx.Client(base_url=stack.dash.url) as c:
        r = c.get("/", headers={"Origin": "https://evil.example"})
        assert r.headers["content-security-policy"] == CSP
        assert r.headers["cache-control"] == "no-store"
        assert not [h for h in r.headers if h.lower().startswith("access-control-")]
        pre = c.request(
            "OPTIONS",
            "/",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert not [h for h in pre.headers if h.lower().startswith("access-control-")]
        assert c.get("/static/app.js").headers["content-security-policy"] == CSP
    assert CSP == (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'"
    )


def test_cross_origin_and_tokenless_posts_change_nothing(stack: Stack) -> None:
    eid = stack.start("nap", seconds=600)
    stack.wait_status(eid, "waiting")
    url = f"/executions/{eid}/cancel"
    with httpx.Client(base_url=stack.dash.url) as c:
        csrf = _csrf(c, f"/executions/{eid}")
        own = stack.dash.url
        cases = [
            ({"Origin": "https://evil.example"}, {"csrf": csrf}),  # another origin
            ({"Origin": own, "Sec-Fetch-Site": "cross-site"}, {"csrf": csrf}),
            ({"Origin": "null"}, {"csrf": csrf}),  # a sandboxed or data: page
            ({}, {"csrf": csrf}),  # neither Origin nor Sec-Fetch-Site
            ({"Origin": own}, {}),  # our origin, no CSRF token
            ({"Origin": own}, {"csrf": "x" * 43}),  # a wrong one
        ]
        for headers, form in cases:
            r = c.post(url, data=form, headers=headers)
            assert r.status_code == 403, (headers, form, r.status_code)
            assert stack.status(eid) == "waiting", (headers, form)
        # bulk actions and sends too
        r = c.post(
            "/executions/bulk",
            data={"action": "cancel", "csrf": csrf},
            headers={"Origin": "https://evil.example"},
        )
        assert r.status_code == 403
        r = c.post("/pipes/approvals/send", data={"data": "{}"}, headers={"Origin": own})
        assert r.status_code == 403
        assert stack.status(eid) == "waiting"
        # the same request from our page with the token does it
        r = c.post(url, data={"csrf": csrf}, headers={"Origin": own})
        assert r.status_code == 303
    assert stack.status(eid) == "cancelled"


def test_a_form_on_another_origin_is_refused(stack: Stack, browser: Any) -> None:
    eid = stack.start("nap", seconds=600)
    stack.wait_status(eid, "waiting")
    context = browser.new_context()
    try:
        p = context.new_page()
        p.goto(stack.dash.url + f"/executions/{eid}")  # the browser holds the CSRF cookie
        csrf = p.locator('input[name="csrf"]').first.get_attribute("value")
        p.goto("about:blank")
        p.set_content(
            f'<form method="post" action="{stack.dash.url}/executions/{eid}/cancel">'
            f'<input name="csrf" value="{csrf}"><button id="go">go</button></form>'
        )
        with p.expect_navigation():
            p.click("#go")
        assert "refused" in p.content()
    finally:
        context.close()
    assert stack.status(eid) == "waiting"
    stack.dash.call(stack.queue.cancel_ids([eid]))


def test_get_never_changes_state(stack: Stack) -> None:
    eid = stack.start("nap", seconds=600)
    stack.wait_status(eid, "waiting")
    with httpx.Client(base_url=stack.dash.url) as c:
        for action in ("cancel", "pause", "retry"):
            assert c.get(f"/executions/{eid}/{action}").status_code == 405
        # the bulk confirmation only counts
        r = c.get(
            "/executions/bulk", params={"action": "cancel", "job": "nap", "status": "waiting"}
        )
        assert r.status_code == 200 and "This will cancel" in r.text
        assert c.get("/jobs/nap/pause").status_code == 405
        assert c.get("/pipes/approvals/send", params={"data": "{}"}).status_code == 405
    assert stack.status(eid) == "waiting"
    assert "nap" not in stack.dash.call(stack.queue.paused_jobs())
    stack.dash.call(stack.queue.cancel_ids([eid]))


@pytest.fixture(scope="module")
def guarded(stack: Stack) -> Any:
    """A second dashboard over the same file, with a token (a client Queue of no jobs)."""
    served = Served(Queue(storage=stack.storage, name="guarded"), token=TOKEN)
    try:
        yield served
    finally:
        served.stop()


def test_token_dashboard_shows_nothing_without_it(
    stack: Stack, guarded: Served, evil: dict[str, str]
) -> None:
    eid = evil["execution"]
    with httpx.Client(base_url=guarded.url) as c:
        for path in ("/", f"/executions/{eid}", "/jobs", "/pipes", "/workers", "/charts", "/cron"):
            r = c.get(path, headers={"Accept": "text/html"})
            assert r.status_code == 303 and r.headers["location"].startswith("/signin"), path
            r = c.get(path)
            assert r.status_code == 401 and eid not in r.text, path
        assert c.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/?token=wrong").status_code == 401
        r = c.post(f"/executions/{eid}/retry")
        assert r.status_code == 401
        # scripts send the bearer token
        r = c.get(f"/executions/{eid}", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and eid in r.text
        # ?token= is answered by a redirect without it, and a session cookie
        r = c.get(f"/executions/{eid}?token={TOKEN}")
        assert r.status_code == 303 and r.headers["location"] == f"/executions/{eid}"
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert TOKEN not in cookie
        assert eid in c.get(f"/executions/{eid}").text


def test_sign_in_form(guarded: Served, page: Watched, evil: dict[str, str]) -> None:
    p = page.page
    p.goto(guarded.url + f"/executions/{evil['execution']}")
    p.wait_for_url(re.compile(r"/signin\?next="))
    assert p.locator("#status").count() == 0 and "ValueError" not in p.content()
    p.fill("#token", "not it")
    p.click("#signin")
    assert p.locator("#wrong").count() == 1
    p.fill("#token", TOKEN)
    p.click("#signin")
    p.wait_for_url(re.compile(rf"/executions/{evil['execution']}$"))
    assert p.locator("#status .s-failed").count() == 1
    page.problems = [m for m in page.problems if "401" not in m]  # the wrong token's answer


def test_non_loopback_bind_without_token_is_refused(stack: Stack) -> None:
    env = {k: v for k, v in os.environ.items() if k != "QANAT_TOKEN"}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "qanat",
            "dashboard",
            "dashapp:queue",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode != 0
    assert "refusing to bind 0.0.0.0 without a token" in res.stderr


def test_sign_in_never_redirects_off_site(guarded: Served) -> None:
    with httpx.Client(base_url=guarded.url) as c:
        csrf = _csrf(c, "/signin")
        for target, expected in (
            ("//evil.example/x", "/"),
            ("/\\evil.example", "/"),
            ("https://evil.example", "/"),
            ("/jobs?x=1", "/jobs?x=1"),
        ):
            r = c.post(
                "/signin",
                data={"csrf": csrf, "token": TOKEN, "next": target},
                headers={"Origin": guarded.url},
            )
            assert r.status_code == 303 and r.headers["location"] == expected, target
        r = c.post("/signin", data={"csrf": csrf, "token": TOKEN}, headers={"Origin": "http://x"})
        assert r.status_code == 403  # a sign-in from another site (login CSRF) is refused
