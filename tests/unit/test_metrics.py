"""Prometheus metrics in one process: the engine's counters and histograms move as
executions run, and ``metrics_app`` serves them with the storage gauges (SPEC §14)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from qanat import Context, NonRetryable, Queue, job, run
from qanat.observability.exposition import Exposition, metrics_app
from qanat.observability.metrics import process_metrics
from qanat.storage import Storage


@job("m_ok")
async def m_ok(n: int) -> int:
    return await run("double", lambda: n * 2)


@job("m_flaky", retry=3, backoff=0)
async def m_flaky(ctx: Context) -> int:
    if ctx.attempt == 1:
        raise RuntimeError("first attempt fails")
    return ctx.attempt


@job("m_boom")
async def m_boom() -> None:
    raise NonRetryable("no")


def sample(name: str, **labels: str) -> float:
    """A value of this process's metrics, 0 if the series does not exist yet."""
    for fam in process_metrics().families():
        for s in fam.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return 0.0


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by name and labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def counts() -> dict[str, float]:
    """The series the first test moves, by a short name."""
    return {
        "started": sample("qanat_executions_started_total", job="m_ok"),
        "done": sample("qanat_executions_finished_total", job="m_ok", status="completed"),
        "retried": sample("qanat_executions_retried_total", job="m_flaky"),
        "flaky": sample("qanat_executions_finished_total", job="m_flaky", status="completed"),
        "failed": sample("qanat_executions_finished_total", job="m_boom", status="failed"),
        "steps": sample("qanat_step_duration_seconds_count", job="m_ok", step="double"),
        "claims": sample("qanat_claim_latency_seconds_count", job="m_ok"),
        "took": sample("qanat_execution_duration_seconds_count", job="m_ok", status="completed"),
    }


async def scrape(q: Queue, path: str = "/metrics", method: str = "GET") -> httpx.Response:
    transport = httpx.ASGITransport(app=metrics_app(q))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.request(method, path)


async def test_counters_and_histograms_move_as_executions_end(make_queue: Any) -> None:
    q = await make_queue(m_ok, m_flaky, m_boom, worker=False)
    before = counts()
    first = await scrape(q)  # turns metrics on for q, before its worker runs anything
    assert first.status_code == 200
    await q.start(worker=True)
    oks = [await q.jobs.m_ok.start(n=i) for i in range(3)]
    assert [await h.result(timeout=5) for h in oks] == [0, 2, 4]
    assert await (await q.jobs.m_flaky.start()).result(timeout=5) == 2
    with pytest.raises(Exception, match="no"):
        await (await q.jobs.m_boom.start()).result(timeout=5)

    after = counts()
    moved = {k: after[k] - before[k] for k in before}
    assert moved == {
        "started": 3,
        "done": 3,
        "retried": 1,
        "flaky": 1,
        "failed": 1,
        "steps": 3,
        "claims": 3,
        "took": 3,
    }


async def test_metrics_app_serves_a_parsable_exposition_with_storage_gauges(
    make_queue: Any,
) -> None:
    q = await make_queue(m_ok)
    assert await (await q.jobs.m_ok.start(n=1)).result(timeout=5) == 2
    await q.jobs.m_ok.pause()
    res = await scrape(q)
    assert res.status_code == 200
    assert res.headers["content-type"].startswith("text/plain")
    assert res.headers["cache-control"] == "no-store"
    got = parse(res.text)
    assert got[("qanat_storage_up", ())] == 1
    assert got[("qanat_executions", (("job", "m_ok"), ("status", "completed")))] == 1
    assert got[("qanat_executions", (("job", "m_ok"), ("status", "pending")))] == 0
    assert got[("qanat_job_paused", (("job", "m_ok"),))] == 1
    assert got[("qanat_executions_started_total", (("job", "m_ok"),))] >= 1
    # the same app mounted at /metrics sees "/"; anything else is refused
    assert (await scrape(q, "/")).status_code == 200
    assert (await scrape(q, "/nope")).status_code == 404
    refused = await scrape(q, method="POST")
    assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"


async def test_storage_counts_are_read_once_per_ttl_and_failures_show_as_down(
    make_queue: Any,
) -> None:
    q = await make_queue(m_ok, worker=False)
    reads = 0
    real = q.stats

    async def counted() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return await real()

    q.stats = counted  # type: ignore[method-assign]
    expo = Exposition(q, ttl=60.0)
    for _ in range(3):
        await expo.render()
    assert reads == 1

    async def broken() -> dict[str, Any]:
        raise OSError("storage is down")

    q.stats = broken  # type: ignore[method-assign]
    text = (await Exposition(q, ttl=0).render()).decode()
    assert parse(text)[("qanat_storage_up", ())] == 0
    # the process's own counters are still served; the storage gauges are left out
    assert "# TYPE qanat_executions_started_total counter" in text
    assert "qanat_executions{" not in text


def test_histograms_are_cumulative_with_le_bounds_and_snapshots_sum(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prometheus_client import generate_latest
    from prometheus_client.registry import CollectorRegistry

    from qanat.observability.metrics import DIR_ENV, Metrics

    def exposition(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        class Source:
            def collect(self) -> Any:
                return m.families()

        registry = CollectorRegistry()
        registry.register(Source())  # type: ignore[arg-type]
        return parse(generate_latest(registry).decode())

    one = Metrics()
    for seconds in (0.001, 0.0011, 0.3, 1000.0, -0.5):  # a bound itself is "le" it
        one.on_step("j", "s", seconds)
    got = exposition(one)
    bucket = "qanat_step_duration_seconds_bucket"
    assert got[(bucket, (("job", "j"), ("le", "0.001"), ("step", "s")))] == 2  # -0.5 -> 0
    assert got[(bucket, (("job", "j"), ("le", "0.005"), ("step", "s")))] == 3
    assert got[(bucket, (("job", "j"), ("le", "0.5"), ("step", "s")))] == 4
    assert got[(bucket, (("job", "j"), ("le", "300.0"), ("step", "s")))] == 4
    assert got[(bucket, (("job", "j"), ("le", "+Inf"), ("step", "s")))] == 5
    assert got[("qanat_step_duration_seconds_count", (("job", "j"), ("step", "s")))] == 5
    assert got[("qanat_step_duration_seconds_sum", (("job", "j"), ("step", "s")))] == (
        pytest.approx(1000.3021)
    )

    # supervised children: each one's snapshot file, summed by whichever answers
    monkeypatch.setenv(DIR_ENV, str(tmp_path))
    a, b = Metrics(), Metrics()
    a.on_finish("j", "completed", 0.2)
    b.on_finish("j", "completed", 0.2)
    b.on_finish("j", "failed", 7.0)
    b.flush()
    seen = exposition(a)  # a writes its own snapshot, then reads both
    finished = "qanat_executions_finished_total"
    assert seen[(finished, (("job", "j"), ("status", "completed")))] == 2
    assert seen[(finished, (("job", "j"), ("status", "failed")))] == 1
    assert len(list(tmp_path.glob("*.json"))) == 2


@pytest.mark.skipif(
    not hasattr(Storage, "worker_list"),
    reason="Storage.worker_list (listing every host's workers) comes with the dashboard branch",
)
async def test_live_workers_gauge_counts_registered_workers(make_queue: Any) -> None:
    q = await make_queue(m_ok)  # its worker registered itself
    got = parse((await Exposition(q, ttl=0).render()).decode())
    assert got[("qanat_workers", ())] == 1


async def test_metrics_app_in_a_starlette_app(make_queue: Any) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount, Route

    q = await make_queue(m_ok, worker=False)
    routed = Starlette(routes=[Route("/metrics", metrics_app(q))])
    mounted = Starlette(routes=[Mount("/metrics", app=metrics_app(q))])
    for outer in (routed, mounted):
        transport = httpx.ASGITransport(app=outer)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", follow_redirects=True
        ) as client:
            res = await client.get("/metrics")
            assert res.status_code == 200
            assert ("qanat_storage_up", ()) in parse(res.text)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=mounted), base_url="http://test"
    ) as client:
        assert (await client.get("/metrics/other")).status_code == 404
