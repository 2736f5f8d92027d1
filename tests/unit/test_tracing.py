"""OpenTelemetry spans in one process (SDK, in-memory exporter): a ``qanat.execution``
span per attempt, parented on the caller's span captured at enqueue, with a
``qanat.step`` child per step run (SPEC §14). The cross-process case is in
tests/acceptance/test_observability_workers.py."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from qanat import Context, job, run
from qanat.observability import tracing
from support import sdk_tracing


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    with sdk_tracing() as exporter:
        yield exporter


@job("t_child")
async def t_child(x: int) -> int:
    return await run("inc", lambda: x + 1)


@job("t_parent", retry=2, backoff=0)
async def t_parent(x: int, ctx: Context) -> int:
    a = await run("first", lambda: x)
    if ctx.attempt == 1:
        raise RuntimeError("attempt 1 fails")
    return a + await t_child.run(x=a)


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


async def test_attempts_and_steps_join_the_callers_trace(
    make_queue: Any, spans: InMemorySpanExporter
) -> None:
    q = await make_queue(t_parent, t_child)
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("web request") as request:
        h = await q.jobs.t_parent.start(x=4)
    assert await h.result(timeout=5) == 9
    stored = await q.storage.get(h.id)
    assert stored is not None and stored.trace is not None
    assert f"{request.get_span_context().trace_id:032x}" in stored.trace

    done = spans.get_finished_spans()
    root = request.get_span_context()
    assert {s.context.trace_id for s in done} == {root.trace_id}, "one trace"
    parent_attempts = [
        s for s in by_name(done, "qanat.execution") if s.attributes["qanat.job"] == "t_parent"
    ]
    assert sorted(s.attributes["qanat.attempt"] for s in parent_attempts) == [1, 2]
    for s in parent_attempts:
        assert s.parent is not None and s.parent.span_id == root.span_id
        assert s.attributes["qanat.execution_id"] == h.id
    first, second = sorted(parent_attempts, key=lambda s: s.attributes["qanat.attempt"])
    assert first.attributes["qanat.status"] == "retry"
    assert first.status.status_code == StatusCode.ERROR
    assert second.attributes["qanat.status"] == "completed"
    # steps are children of their attempt; attempt 2 replays "first" (no new run)
    steps = by_name(done, "qanat.step")
    step_parent = {(s.attributes["qanat.step"], s.parent.span_id) for s in steps if s.parent}
    assert ("first", first.context.span_id) in step_parent
    assert ("first", second.context.span_id) not in step_parent
    # the child execution, started inside attempt 2, is parented inside that attempt
    (child,) = [
        s for s in by_name(done, "qanat.execution") if s.attributes["qanat.job"] == "t_child"
    ]
    inside = {second.context.span_id} | {
        s.context.span_id for s in steps if s.parent and s.parent.span_id == second.context.span_id
    }
    assert child.parent is not None and child.parent.span_id in inside
    assert ("inc", child.context.span_id) in step_parent


async def test_without_a_tracer_provider_nothing_is_traced(make_queue: Any) -> None:
    q = await make_queue(t_child)
    h = await q.jobs.t_child.start(x=1)
    assert await h.result(timeout=5) == 2
    stored = await q.storage.get(h.id)
    assert stored is not None and stored.trace is None
    assert tracing.capture() is None


NO_OTEL = r"""
import asyncio, sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ImportError(f"blocked: {name}")
        return None

sys.meta_path.insert(0, Block())
import qanat
from qanat import job, run

@job
async def plain(x: int) -> int:
    return await run("inc", lambda: x + 1)

async def main():
    q = qanat.Queue(jobs=[plain], storage="memory://")
    await q.start(worker=True)
    h = await q.jobs.plain.start(x=1)
    out = await h.result(timeout=5)
    rec = await q.storage.get(h.id)
    await q.stop()
    return out, rec.trace

print(asyncio.run(main()), sorted(m for m in sys.modules if m.startswith("opentelemetry")))
"""


@pytest.mark.parametrize("installed", [False, True], ids=["not-installed", "unused"])
def test_without_opentelemetry_in_use_jobs_run_and_nothing_is_imported(installed: bool) -> None:
    """Not installed (imports of it fail), or installed but not used by the application:
    either way qanat imports none of it and stores no trace context."""
    code = NO_OTEL.replace("sys.meta_path.insert(0, Block())", "") if installed else NO_OTEL
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "(2, None) []"
