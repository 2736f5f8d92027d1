"""The API over PostgreSQL (a schema of the session's real server): the same routes and
refusals hold, and a refused request leaves every table as it was."""

from __future__ import annotations

from api_support import Api, MakeApi
from qanat import Queue


async def _one_done(queue: Queue) -> None:
    await (await queue.jobs.add.start(a=1)).wait(10)


async def test_start_list_get_and_steer_over_postgres(make_api: MakeApi) -> None:
    api: Api = await make_api(kind="postgres", run_first=_one_done)
    ids = []
    for a in range(3):
        r = await api.client.post("/jobs/add/start", json={"input": {"a": a}, "group": "pg"})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    first = await api.client.get("/executions", params={"group": "pg", "limit": 2})
    second = await api.client.get(
        "/executions", params={"group": "pg", "limit": 2, "cursor": first.json()["next"]}
    )
    got = [i["id"] for i in first.json()["items"] + second.json()["items"]]
    assert got == ids[::-1] and second.json()["next"] is None
    r = await api.client.post(f"/executions/{ids[0]}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    done = await api.client.get("/executions", params={"status": "completed"})
    [completed] = done.json()["items"]
    assert completed["output"] == 2
    assert (await api.client.get(f"/executions/{completed['id']}")).json()["status"] == "completed"


async def test_refusals_change_nothing_over_postgres(make_api: MakeApi) -> None:
    api: Api = await make_api(kind="postgres", run_first=_one_done)
    done = (await api.client.get("/executions")).json()["items"][0]["id"]
    await api.refused("POST", f"/executions/{done}/cancel", 409, "completed")
    await api.refused("POST", f"/executions/{done}/retry", 409, "completed")
    await api.refused("POST", "/jobs/add/start", 422, "'a'", json={"input": {"a": "x"}})
    await api.refused("POST", "/jobs/nope/start", 404, "'nope'", json={})
    await api.refused("POST", "/pipes/uploads/send", 422, "'user_id'", json={"data": {"path": "p"}})
    await api.refused("GET", "/executions?cursor=bad", 400, "'cursor'")
    r = await api.client.post("/pipes/uploads/send", json={"data": {"path": "p", "user_id": 1}})
    assert r.status_code == 201 and len(r.json()["started"]) == 1
    assert (await api.client.get("/health")).status_code == 200
