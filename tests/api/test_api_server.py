"""What every route shares: ``/stats``, ``/health``, the bearer token, cross-origin
refusal, unknown routes and methods, mounting under ``/api``, and the OpenAPI document
generated from the pydantic models."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from api_support import Api, MakeApi
from qanat.server import api_models as models
from qanat.server.api import OPERATIONS, api_app
from qanat.server.api_openapi import REF

#: The routes of SPEC §13, as the document must name them.
SPEC_ROUTES = {
    ("post", "/jobs/{job}/start"),
    ("get", "/executions"),
    ("get", "/executions/{id}"),
    ("post", "/executions/{id}/cancel"),
    ("post", "/executions/{id}/pause"),
    ("post", "/executions/{id}/resume"),
    ("post", "/executions/{id}/retry"),
    ("post", "/pipes/{pipe}/send"),
    ("get", "/events"),
    ("get", "/stats"),
    ("get", "/health"),
}


async def test_stats_is_what_queue_stats_returns(api: Api) -> None:
    for a in range(3):
        await api.client.post("/jobs/add/start", json={"input": {"a": a}})
    await api.queue.jobs.boom.pause()
    r = await api.client.get("/stats")
    assert r.status_code == 200
    assert r.json() == await api.queue.stats()
    assert r.json()["by_status"]["pending"] == 3 and r.json()["paused_jobs"] == ["boom"]


async def test_health_is_200_while_storage_answers_and_503_after(api: Api) -> None:
    r = await api.client.get("/health")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})
    await api.queue.storage.close()  # the storage goes away under the API
    r = await api.client.get("/health")
    assert r.status_code == 503
    assert r.json()["error"].startswith("storage does not answer")


def _requests() -> list[tuple[str, str]]:
    out = []
    for op in OPERATIONS:
        path = op.path.replace("{job}", "add").replace("{pipe}", "approvals").replace("{id}", "x")
        out.append((op.method, path))
    return [*out, ("GET", "/openapi.json"), ("GET", "/no/such/route")]


@pytest.mark.parametrize(("method", "path"), _requests())
async def test_with_a_token_every_route_wants_it(make_api: MakeApi, method: str, path: str) -> None:
    api = await make_api(token="s3cret")
    await api.refused(method, path, 401, "no bearer token")
    await api.refused(
        method, path, 401, "wrong bearer token", headers={"Authorization": "Bearer x"}
    )
    r = await api.refused(method, path, 401, "no bearer token", headers={"Authorization": "s3cret"})
    assert r
    ok = await api.client.request(method, path, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code != 401


async def test_the_401_says_how_to_authenticate(make_api: MakeApi) -> None:
    api = await make_api(token="s3cret")
    r = await api.client.get("/health")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    r = await api.client.post(
        "/jobs/add/start", json={"input": {"a": 1}}, headers={"Authorization": "Bearer s3cret"}
    )
    assert r.status_code == 201


async def test_a_state_change_from_another_origin_is_refused(api: Api) -> None:
    evil = {"Origin": "http://evil.example"}
    await api.refused("POST", "/jobs/add/start", 403, "cross-origin", json={"input": {"a": 1}},
                      headers=evil)  # fmt: skip
    await api.refused("POST", "/pipes/approvals/send", 403, "cross-origin", json={"data": 1},
                      headers=evil)  # fmt: skip
    same = {"Origin": "http://127.0.0.1:4000"}  # the dashboard's own pages
    r = await api.client.post("/jobs/add/start", json={"input": {"a": 1}}, headers=same)
    assert r.status_code == 201
    await api.refused("POST", f"/executions/{r.json()['id']}/cancel", 403, "cross-origin",
                      headers=evil)  # fmt: skip
    assert (await api.client.get("/executions", headers=evil)).status_code == 200  # reads: CORS


@pytest.mark.parametrize(("method", "path"), _requests()[:-1])
async def test_routes_without_a_query_refuse_one(api: Api, method: str, path: str) -> None:
    if path in ("/executions", "/events"):
        await api.refused(method, f"{path}?token=t", 400, "query parameter 'token'")
    else:
        await api.refused(method, f"{path}?token=t", 400, "takes no query parameters", "'token'")


async def test_unknown_routes_and_methods_answer_json(api: Api) -> None:
    await api.refused("GET", "/jobs", 404, "no such route", "/jobs")
    body = await api.refused("DELETE", "/executions/x", 405, "DELETE")
    assert body
    r = await api.client.put("/stats")
    assert r.status_code == 405 and "GET" in r.headers["allow"]


async def test_mounted_under_api_the_document_names_its_server(api: Api) -> None:
    outer = Starlette(routes=[Mount("/api", app=api_app(api.queue))])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=outer), base_url="http://127.0.0.1"
    ) as c:
        doc = (await c.get("/api/openapi.json")).json()
        assert doc["servers"] == [{"url": "/api"}]
        r = await c.post("/api/jobs/add/start", json={"input": {"a": 1}})
        assert r.status_code == 201
        assert (await c.get(f"/api/executions/{r.json()['id']}")).json()["status"] == "pending"


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [
            r for v in node.values() for r in _refs(v)
        ]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


async def test_the_openapi_document_names_every_route_from_the_models(api: Api) -> None:
    r = await api.client.get("/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    doc = json.loads(r.text)
    assert doc["openapi"].startswith("3.1")
    named = {(m, p) for p, item in doc["paths"].items() for m in item}
    concrete = {(m, p) for m, p in named if "{" not in p and p.startswith(("/jobs", "/pipes"))}
    assert named - concrete == SPEC_ROUTES
    assert concrete == {("post", f"/jobs/{j.name}/start") for j in api.queue.jobs} | {
        ("post", f"/pipes/{p.name}/send") for p in api.queue.pipes
    }
    schemas = doc["components"]["schemas"]
    for ref in _refs(doc):  # every reference resolves
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref
    for path, model in (
        ("/jobs/{job}/start", models.StartRequest),
        ("/pipes/{pipe}/send", models.SendRequest),
        ("/executions/{id}/cancel", models.CancelRequest),
    ):
        body = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        name = body["$ref"].rsplit("/", 1)[1]
        mine = model.model_json_schema(ref_template=REF)
        mine.pop("$defs", None)
        assert schemas[name] == mine  # the very schema pydantic validates requests with
    query = doc["paths"]["/executions"]["get"]["parameters"]
    assert {p["name"] for p in query} == set(models.ExecutionsQuery.model_fields)
    status = next(p for p in query if p["name"] == "status")
    assert "cancelled" in json.dumps(status["schema"]) and status["explode"] is True
    start = doc["paths"]["/jobs/{job}/start"]["post"]["responses"]
    assert {"201", "400", "401", "404", "413", "422"} <= set(start)
    assert start["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    detail = doc["paths"]["/executions/{id}"]["get"]["responses"]["200"]
    detail_name = detail["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert {"steps", "logs", "progress", "error"} <= set(schemas[detail_name]["properties"])


async def test_each_job_and_pipe_has_its_own_input_schema_in_the_document(api: Api) -> None:
    doc = (await api.client.get("/openapi.json")).json()

    def body_field(path: str, field: str) -> dict[str, Any]:
        schema = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        generic, typed = schema["schema"]["allOf"]
        assert generic["$ref"].endswith(("/StartRequest", "/SendRequest"))
        out: dict[str, Any] = typed["properties"][field]
        return out

    add = body_field("/jobs/add/start", "input")
    assert add["properties"]["a"]["type"] == "integer" and add["required"] == ["a"]
    assert add == api.queue.jobs.add.input_schema()
    place = body_field("/jobs/place/start", "input")
    assert place["properties"]["qty"]["exclusiveMinimum"] == 0
    ship = body_field("/jobs/ship/start", "input")  # a nested model: its $def moves
    assert ship["properties"]["order"] == {"$ref": "#/components/schemas/job.ship.Order"}
    assert doc["components"]["schemas"]["job.ship.Order"]["required"] == ["order_id", "qty"]
    upload = body_field("/pipes/uploads/send", "data")
    assert set(upload["properties"]) == {"path", "user_id"}
    assert body_field("/pipes/approvals/send", "data") == {}  # no input type: any JSON
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
