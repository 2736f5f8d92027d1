"""One ``qanat serve`` process serves the worker protocol, the API, the dashboard and
``/metrics`` on one port, each behind the same token (SPEC §10, §11, §14)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from node_server import NodeServer

APP = "import os, qanat\nqueue = qanat.Queue(storage=os.environ['QANAT_TEST_STORAGE'])\n"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeServer]:
    (tmp_path / "mountsapp.py").write_text(APP)
    server = NodeServer(tmp_path, tmp_path / "node.db", app="mountsapp:queue")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_serve_mounts_api_dashboard_and_metrics_behind_one_token(node: NodeServer) -> None:
    bearer = {"authorization": f"Bearer {node.token}"}
    with httpx.Client(base_url=node.url, timeout=10) as http:
        # without the token: nothing is shown anywhere
        assert http.get("/api/health").status_code == 401
        assert http.get("/metrics").status_code == 401
        page = http.get("/", headers={"accept": "text/html"})
        assert page.status_code in (303, 401) and "execution" not in page.text.lower()
        # with it: the API answers, /metrics parses, the dashboard renders its list page
        assert http.get("/api/health", headers=bearer).json() == {"status": "ok"}
        metrics = http.get("/metrics", headers=bearer)
        assert metrics.status_code == 200
        names = {f.name for f in text_string_to_metric_families(metrics.text)}
        assert "qanat_storage_up" in names
        dash = http.get("/", headers=bearer)
        assert dash.status_code == 200 and "<html" in dash.text.lower()
        assert "script-src 'self'" in dash.headers["content-security-policy"]


async def test_dashboard_alone_serves_metrics_behind_its_token(tmp_path: Path) -> None:
    from qanat import Queue
    from qanat.dashboard.serve import with_metrics

    queue = Queue(storage=f"sqlite:///{tmp_path / 'dash.db'}")
    await queue.start(worker=False)
    try:
        app = with_metrics(queue, "dash-token")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            assert (await http.get("/metrics")).status_code == 401
            ok = await http.get("/metrics", headers={"authorization": "Bearer dash-token"})
            assert ok.status_code == 200
            assert "qanat_storage_up" in {f.name for f in text_string_to_metric_families(ok.text)}
            assert (await http.get("/", headers={"accept": "text/html"})).status_code in (303, 401)
    finally:
        await queue.stop()
