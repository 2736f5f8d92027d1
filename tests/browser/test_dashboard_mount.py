"""``dashboard_app`` mounted inside a user's own Starlette app, under a prefix: links,
redirects and cookies carry the prefix, and the guard works there too (in process,
over httpx's ASGI transport and a SQLite file)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from qanat import Queue, job
from qanat.dashboard import dashboard_app


@job
async def mounted_job(n: int) -> int:
    return n


async def test_mounted_under_a_prefix(tmp_path: Path) -> None:
    q = Queue(jobs=[mounted_job], storage=f"sqlite:///{tmp_path / 'm.db'}")
    await q.start(worker=False)
    try:
        h = await q.jobs.mounted_job.start(n=1)

        async def home(request: object) -> PlainTextResponse:
            return PlainTextResponse("the user's app")

        app = Starlette(
            routes=[Route("/", home), Mount("/ops/qanat", dashboard_app(q, token="tk"))]
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://site") as c:
            assert (await c.get("/")).text == "the user's app"
            r = await c.get("/ops/qanat/", headers={"Accept": "text/html"})
            assert r.status_code == 303 and r.headers["location"].startswith("/ops/qanat/signin")
            r = await c.get(f"/ops/qanat/executions/{h.id}?token=tk")
            assert r.headers["location"] == f"/ops/qanat/executions/{h.id}"
            assert "Path=/ops/qanat" in r.headers["set-cookie"]
            page = await c.get(f"/ops/qanat/executions/{h.id}")
            assert page.status_code == 200
            assert 'href="/ops/qanat/static/app.css"' in page.text
            assert f'action="/ops/qanat/executions/{h.id}/pause"' in page.text
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert csrf is not None
            r = await c.post(
                f"/ops/qanat/executions/{h.id}/pause",
                data={"csrf": csrf.group(1)},
                headers={"Origin": "http://site"},
            )
            assert r.status_code == 303
            assert r.headers["location"].startswith(f"/ops/qanat/executions/{h.id}?done=")
            assert (await q.storage.get(h.id)).status == "paused"  # type: ignore[union-attr]
            assert (await c.get("/ops/qanat/static/app.js")).status_code == 200
    finally:
        await q.stop()
