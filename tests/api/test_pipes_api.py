"""``POST /pipes/{pipe}/send`` and ``GET /events`` over a real SQLite file: what a send
starts and wakes, paging through events, and each bad input refused with nothing
stored."""

from __future__ import annotations

from typing import Any

import pytest

from api_support import JSON, Api, MakeApi
from support import eventually

EVENT_KEYS = {"id", "pipe", "data", "sent_at", "source", "started", "woken", "failed"}


async def test_send_answers_the_event_and_what_it_started(api: Api) -> None:
    r = await api.client.post("/pipes/uploads/send", json={"data": {"path": "a.mp3", "user_id": 1}})
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"id", "started", "woken"} and body["woken"] == []
    [started] = body["started"]
    e = await api.queue.executions.get(started)
    assert e is not None and e.job == "on_upload"
    assert e.info is not None and e.info.status == "pending"
    [stored] = [ev async for ev in api.queue.events.list()]
    assert stored.id == body["id"] and stored.executions == [started]


async def test_send_wakes_an_execution_waiting_on_the_pipe(make_api: MakeApi) -> None:
    api = await make_api(worker=True)
    h = await api.queue.jobs.approve.start(order_id=7)

    async def waiting() -> bool:
        return await h.status() == "waiting"

    await eventually(waiting)
    other = await api.client.post("/pipes/approvals/send", json={"data": {"order_id": 8}})
    assert other.json()["woken"] == []
    r = await api.client.post("/pipes/approvals/send", json={"data": {"order_id": 7, "ok": True}})
    assert r.status_code == 201 and r.json() == {
        "id": r.json()["id"],
        "started": [],
        "woken": [h.id],
    }
    assert await h.result(timeout=10) == {"order_id": 7, "ok": True}


@pytest.mark.parametrize(
    ("url", "kw", "status", "needles"),
    [
        ("/pipes/nope/send", {"json": {"data": 1}}, 404, ("'nope'", "uploads")),
        ("/pipes/uploads/send", {"content": b"[", "headers": JSON}, 400, ("not JSON",)),
        ("/pipes/uploads/send", {"json": "text"}, 400, ("JSON object", "str")),
        ("/pipes/uploads/send", {"json": {}}, 400, ("'data'", "required")),
        ("/pipes/uploads/send", {}, 400, ("'data'", "required")),
        ("/pipes/uploads/send", {"json": {"data": {}, "extra": 1}}, 400, ("'extra'",)),
        (
            "/pipes/uploads/send",
            {"json": {"data": {"path": "a", "user_id": "one"}}},
            422,
            ("pipe 'uploads'", "'user_id'"),
        ),
        ("/pipes/uploads/send", {"json": {"data": {"path": "a"}}}, 422, ("'user_id'",)),
        (
            "/pipes/uploads/send",
            {"content": b"data", "headers": {"content-type": "text/plain"}},
            415,
            ("text/plain",),
        ),
    ],
)
async def test_send_refuses_bad_input(
    api: Api, url: str, kw: dict[str, Any], status: int, needles: tuple[str, ...]
) -> None:
    await api.client.post("/pipes/approvals/send", json={"data": 1})  # something stored
    await api.refused("POST", url, status, *needles, **kw)


async def test_send_refuses_data_over_max_payload(make_api: MakeApi) -> None:
    api = await make_api(max_payload="1KB")
    body = await api.refused(
        "POST", "/pipes/approvals/send", 413, "pipe 'approvals'", json={"data": "z" * 5000}
    )
    assert "max_payload" in body["error"]


async def test_events_page_newest_first_and_filter_by_pipe(api: Api) -> None:
    sent = []
    for i in range(3):
        r = await api.client.post("/pipes/approvals/send", json={"data": {"i": i}})
        sent.append(r.json()["id"])
    up = await api.client.post("/pipes/uploads/send", json={"data": {"path": "p", "user_id": 2}})
    seen, cursor = [], None
    while True:
        r = await api.client.get(
            "/events", params={"limit": 2, **({"cursor": cursor} if cursor else {})}
        )
        assert r.status_code == 200
        page = r.json()
        assert set(page) == {"items", "next"}
        assert all(set(e) == EVENT_KEYS for e in page["items"])
        seen += page["items"]
        cursor = page["next"]
        if cursor is None:
            break
    assert [e["id"] for e in seen] == [up.json()["id"], *sent[::-1]]
    assert seen[0]["data"] == {"path": "p", "user_id": 2}
    assert seen[0]["started"] == up.json()["started"] and seen[0]["pipe"] == "uploads"
    only = await api.client.get("/events?pipe=approvals")
    assert [e["data"] for e in only.json()["items"]] == [{"i": 2}, {"i": 1}, {"i": 0}]


@pytest.mark.parametrize(
    ("query", "status", "needles"),
    [
        ("pipe=nope", 404, ("'nope'",)),
        ("cursor=bad", 400, ("'cursor'",)),
        ("limit=-1", 400, ("'limit'",)),
        ("since=yesterday", 400, ("'since'",)),
    ],
)
async def test_events_refuse_bad_queries(
    api: Api, query: str, status: int, needles: tuple[str, ...]
) -> None:
    await api.client.post("/pipes/approvals/send", json={"data": 1})
    await api.refused("GET", f"/events?{query}", status, *needles)
