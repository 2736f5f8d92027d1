"""``POST /jobs/{job}/start``, ``GET /executions``, ``GET /executions/{id}`` and the
four actions, over a real SQLite file: what each answers, and each bad input refused
with the right status, a sentence naming what was wrong, and nothing stored changed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from api_support import JSON, Api, MakeApi
from qanat import Queue

#: The keys of an execution in SPEC §13, exactly (steps and logs only on one execution).
EXECUTION_KEYS = {
    "id", "job", "status", "input", "output", "error", "attempt", "group", "parent_id",
    "created_at", "started_at", "completed_at", "progress",
}  # fmt: skip


def _utc(text: str) -> datetime:
    when = datetime.fromisoformat(text)
    assert when.utcoffset() == timedelta(0), text
    return when


# --- start ------------------------------------------------------------------------------


async def test_start_answers_201_with_the_stored_execution(api: Api) -> None:
    r = await api.client.post("/jobs/add/start", json={"input": {"a": 2}})
    assert r.status_code == 201
    body = r.json()
    assert set(body) == EXECUTION_KEYS
    assert body["job"] == "add" and body["status"] == "pending"
    assert body["input"] == {"a": 2, "b": 1} and body["output"] is None and body["error"] is None
    stored = await api.queue.executions.get(body["id"])
    assert stored is not None and stored.info is not None
    assert _utc(body["created_at"]).timestamp() == pytest.approx(stored.info.created_at)


async def test_start_applies_each_option(api: Api) -> None:
    at = datetime.now(UTC) + timedelta(hours=1)
    r = await api.client.post(
        "/jobs/add/start",
        json={
            "input": {"a": 1},
            "key": "k1",
            "priority": 7,
            "run_at": at.isoformat(),
            "group": "run-1",
            "deadline": "2h",
        },
    )
    assert r.status_code == 201, r.text
    rec = (await api.queue.executions.get(r.json()["id"])).info  # type: ignore[union-attr]
    assert rec is not None
    assert (rec.key, rec.priority, rec.group) == ("k1", 7, "run-1")
    assert rec.run_at == pytest.approx(at.timestamp())
    assert rec.deadline == pytest.approx(rec.created_at + 7200)
    again = await api.client.post("/jobs/add/start", json={"input": {"a": 5}, "key": "k1"})
    assert again.status_code == 201 and again.json()["id"] == r.json()["id"]  # idempotent
    delayed = await api.client.post("/jobs/add/start", json={"input": {"a": 1}, "delay": "5m"})
    drec = (await api.queue.executions.get(delayed.json()["id"])).info  # type: ignore[union-attr]
    assert drec is not None and drec.run_at == pytest.approx(drec.created_at + 300)


async def test_start_goes_through_the_client_its_hooks_fire(api: Api) -> None:
    seen: list[tuple[str, str]] = []
    api.queue.on("trigger", lambda e: seen.append((e.job, e.execution_id)))
    r = await api.client.post("/jobs/add/start", json={"input": {"a": 1}})
    assert r.status_code == 201, r.text
    assert seen == [("add", r.json()["id"])]
    at = datetime(2030, 1, 2, 5, 0, tzinfo=timezone(timedelta(hours=2)))
    r = await api.client.post(
        "/jobs/add/start", json={"input": {"a": 1}, "run_at": at.isoformat(),
                                 "deadline": "2030-01-03T00:00:00Z"}
    )  # fmt: skip
    rec = (await api.queue.executions.get(r.json()["id"])).info  # type: ignore[union-attr]
    assert rec is not None and rec.run_at == at.timestamp()
    assert rec.deadline == datetime(2030, 1, 3, tzinfo=UTC).timestamp()


async def test_start_with_a_model_input_and_no_body(api: Api) -> None:
    r = await api.client.post("/jobs/place/start", json={"input": {"order_id": 3, "qty": 2}})
    assert r.status_code == 201 and r.json()["input"] == {"order_id": 3, "qty": 2}
    bare = await api.client.post("/jobs/boom/start")  # no body: no input, no options
    assert bare.status_code == 201 and bare.json()["input"] == {"why": "no"}


A: dict[str, Any] = {"input": {"a": 1}}


@pytest.mark.parametrize(
    ("url", "kw", "status", "needles"),
    [
        ("/jobs/nope/start", {"json": {}}, 404, ("'nope'", "add")),
        ("/jobs/add/start", {"content": b"{not json", "headers": JSON}, 400, ("not JSON",)),
        ("/jobs/add/start", {"json": [1, 2]}, 400, ("JSON object", "list")),
        ("/jobs/add/start", {"json": {"inptu": {"a": 1}}}, 400, ("'inptu'",)),
        ("/jobs/add/start", {"json": {"input": [1]}}, 400, ("'input'",)),
        ("/jobs/add/start", {"json": A | {"priority": "high"}}, 400, ("'priority'",)),
        ("/jobs/add/start", {"json": A | {"priority": True}}, 400, ("'priority'",)),
        ("/jobs/add/start", {"json": A | {"delay": "soon"}}, 400, ("'delay'", "soon")),
        ("/jobs/add/start", {"json": A | {"key": 5}}, 400, ("'key'",)),
        ("/jobs/add/start", {"json": A | {"deadline": "soon"}}, 400, ("'deadline'", "soon")),
        (
            "/jobs/add/start",
            {"json": A | {"deadline": "2030-01-01T00:00:00"}},
            400,
            ("'deadline'", "timezone"),
        ),
        (
            "/jobs/add/start",
            {"json": {"input": {"a": 1}, "run_at": "2030-01-01T00:00:00"}},
            400,
            ("'run_at'", "timezone"),
        ),
        (
            "/jobs/add/start",
            {"json": {"input": {"a": 1}, "delay": 5, "run_at": "2030-01-01T00:00:00Z"}},
            400,
            ("delay", "run_at"),
        ),
        ("/jobs/add/start", {"json": {"input": {"a": "x"}}}, 422, ("job 'add'", "'a'")),
        ("/jobs/add/start", {"json": {"input": {}}}, 422, ("'a'", "required")),
        ("/jobs/add/start", {"json": {"input": {"a": 1, "c": 2}}}, 422, ("'c'",)),
        ("/jobs/place/start", {"json": {"input": {"order_id": 1, "qty": 0}}}, 422, ("'qty'",)),
        (
            "/jobs/add/start",
            {"content": b"a=1", "headers": {"content-type": "application/x-www-form-urlencoded"}},
            415,
            ("application/json",),
        ),
    ],
)  # fmt: skip
async def test_start_refuses_bad_input(
    api: Api, url: str, kw: dict[str, Any], status: int, needles: tuple[str, ...]
) -> None:
    await api.client.post("/jobs/add/start", json={"input": {"a": 1}})  # something stored
    await api.refused("POST", url, status, *needles, **kw)


async def test_start_refuses_payloads_over_max_payload(make_api: MakeApi) -> None:
    api = await make_api(max_payload="1KB")
    big = "x" * 2000
    body = await api.refused("POST", "/jobs/boom/start", 413, json={"input": {"why": big}})
    assert "max_payload" in body["error"] and "job 'boom'" in body["error"]
    huge = b'{"input": {"why": "' + b"y" * 100_000 + b'"}}'  # over the body limit itself
    await api.refused("POST", "/jobs/boom/start", 413, "request body", content=huge, headers=JSON)


async def test_a_bug_in_the_app_is_a_500_that_stores_nothing(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    body = await api.refused("POST", "/jobs/sloppy/start", 500, "internal error")
    assert "ZeroDivisionError" not in body["error"]  # details go to the log, not the client
    assert "ZeroDivisionError" in caplog.text and "/jobs/sloppy/start" in caplog.text


# --- list -------------------------------------------------------------------------------


async def _started(api: Api, n: int, job: str = "add", **extra: Any) -> list[str]:
    ids = []
    for i in range(n):
        r = await api.client.post(f"/jobs/{job}/start", json={"input": {"a": i}} | extra)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    return ids


async def test_list_pages_newest_first_through_every_execution(api: Api) -> None:
    ids = await _started(api, 5)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        r = await api.client.get("/executions", params=params)
        assert r.status_code == 200
        page = r.json()
        assert set(page) == {"items", "next"} and len(page["items"]) <= 2
        assert all(set(item) == EXECUTION_KEYS for item in page["items"])
        seen += [item["id"] for item in page["items"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == ids[::-1]


async def test_list_filters_by_job_status_and_group(api: Api) -> None:
    adds = await _started(api, 2)
    grouped = await _started(api, 2, group="g1")
    boom = (await api.client.post("/jobs/boom/start")).json()["id"]
    await api.client.post(f"/executions/{adds[0]}/cancel")

    async def ids(**params: Any) -> list[str]:
        r = await api.client.get("/executions", params=params)
        assert r.status_code == 200, r.text
        return [i["id"] for i in r.json()["items"]]

    assert await ids(job="boom") == [boom]
    assert set(await ids(job="boom,add")) == {*adds, *grouped, boom}
    assert await ids(group="g1") == grouped[::-1]
    assert await ids(status="cancelled") == [adds[0]]
    both = await api.client.get("/executions?status=cancelled&status=pending&job=add")
    assert {i["id"] for i in both.json()["items"]} == {*adds, *grouped}


@pytest.mark.parametrize(
    ("query", "status", "needles"),
    [
        ("status=bogus", 400, ("'status'", "bogus")),
        ("limit=0", 400, ("'limit'",)),
        ("limit=5000", 400, ("'limit'", "1000")),
        ("limit=many", 400, ("'limit'", "many")),
        ("colour=red", 400, ("'colour'",)),
        ("group=a&group=b", 400, ("'group'", "2 times")),
        ("cursor=nonsense", 400, ("'cursor'",)),
        ("job=nope", 404, ("'nope'",)),
    ],
)
async def test_list_refuses_bad_queries(
    api: Api, query: str, status: int, needles: tuple[str, ...]
) -> None:
    await _started(api, 1)
    await api.refused("GET", f"/executions?{query}", status, *needles)


# --- one execution ----------------------------------------------------------------------


async def _finished(queue: Queue) -> None:
    await queue.jobs.chatty.start(n=4)
    h = await queue.jobs.boom.start(why="bad")
    await h.wait(10)
    c = await queue.executions.first(job="chatty")
    assert c is not None
    await c.wait(10)


async def test_get_one_execution_with_steps_progress_and_logs(make_api: MakeApi) -> None:
    api = await make_api(run_first=_finished)
    chatty = await api.queue.executions.first(job="chatty")
    assert chatty is not None
    r = await api.client.get(f"/executions/{chatty.id}")
    assert r.status_code == 200
    body = r.json()
    assert set(body) == EXECUTION_KEYS | {"steps", "logs"}
    assert body["status"] == "completed" and body["output"] == 8
    assert body["progress"] == {"pct": 50.0, "message": "half way", "details": {"n": 4}}
    [step] = body["steps"]
    assert (step["key"], step["kind"], step["status"], step["result"]) == (
        "double", "run", "completed", 8,
    )  # fmt: skip
    assert step["error"] is None
    [line] = body["logs"]
    assert line["message"] == "doubled" and line["fields"] == {"n": 4, "total": 8}
    for key in ("created_at", "started_at", "completed_at"):
        _utc(body[key])
    _utc(step["started_at"])
    _utc(line["at"])


async def test_a_failed_execution_shows_its_error(make_api: MakeApi) -> None:
    api = await make_api(run_first=_finished)
    failed = await api.queue.executions.first(job="boom")
    assert failed is not None
    body = (await api.client.get(f"/executions/{failed.id}")).json()
    assert body["status"] == "failed"
    assert set(body["error"]) == {"type", "message", "traceback"}
    assert body["error"]["type"] == "NonRetryable" and body["error"]["message"] == "boom: bad"
    assert "NonRetryable" in body["error"]["traceback"]


async def test_get_an_unknown_id_is_404(api: Api) -> None:
    await api.refused("GET", "/executions/nope", 404, "'nope'")


# --- actions ----------------------------------------------------------------------------


async def test_each_action_moves_the_execution_and_answers_it(api: Api) -> None:
    [eid] = await _started(api, 1)

    async def act(action: str, **kw: Any) -> dict[str, Any]:
        r = await api.client.post(f"/executions/{eid}/{action}", **kw)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        assert set(body) == EXECUTION_KEYS and body["id"] == eid
        return body

    assert (await act("pause"))["status"] == "paused"
    assert (await act("pause"))["status"] == "paused"  # already paused: no change, no error
    assert (await act("resume"))["status"] == "pending"
    assert (await act("cancel", json={"reason": "not needed"}))["status"] == "cancelled"
    rec = (await api.queue.executions.get(eid)).info  # type: ignore[union-attr]
    assert rec is not None and rec.reason == "not needed"
    assert (await act("retry", json={}))["status"] == "pending"


@pytest.mark.parametrize(
    ("setup", "action", "needles"),
    [
        ("pending", "resume", ("not paused",)),
        ("pending", "retry", ("pending", "failed or cancelled")),
        ("completed", "cancel", ("completed", "only live")),
        ("completed", "pause", ("completed",)),
        ("completed", "resume", ("not paused",)),
        ("failed", "cancel", ("failed",)),
        ("completed", "retry", ("completed", "failed or cancelled")),
    ],
)
async def test_an_action_the_status_refuses_is_409(
    make_api: MakeApi, setup: str, action: str, needles: tuple[str, ...]
) -> None:
    api = await make_api(run_first=_finished)
    if setup == "pending":
        [eid] = await _started(api, 1)
    else:
        job = "chatty" if setup == "completed" else "boom"
        found = await api.queue.executions.first(job=job)
        assert found is not None
        eid = found.id
    await api.refused("POST", f"/executions/{eid}/{action}", 409, f"cannot {action}", *needles)


@pytest.mark.parametrize("action", ["cancel", "pause", "resume", "retry"])
async def test_actions_refuse_unknown_ids_and_bad_bodies(api: Api, action: str) -> None:
    [eid] = await _started(api, 1)
    await api.refused("POST", f"/executions/nope/{action}", 404, "'nope'")
    await api.refused("POST", f"/executions/{eid}/{action}", 400, "'extra'", json={"extra": 1})
    await api.refused(
        "POST", f"/executions/{eid}/{action}", 400, "not JSON", content=b"{", headers=JSON
    )
    form = {"content-type": "application/x-www-form-urlencoded"}
    await api.refused(
        "POST", f"/executions/{eid}/{action}", 415, "application/json", content=b"a=1", headers=form
    )
    if action == "pause":  # an empty body is no body, whatever it is declared as
        r = await api.client.post(f"/executions/{eid}/pause", content=b"", headers=form)
        assert r.status_code == 200 and r.json()["status"] == "paused"
