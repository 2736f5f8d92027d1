"""SPEC §12 on a real SQLite file: every user error is clear and loses nothing stored."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pydantic
import pytest

import qanat
from qanat import Queue, job, run
from qanat.storage import from_url


@job
async def add(a: int, b: int) -> int:
    return a + b


@job(retry=1)
async def unstorable() -> None:
    await run("socket", lambda: object())


async def _snapshot(q: Queue) -> list[tuple[str, str, str]]:
    return sorted(
        [(e.id, e.job, (e.info.input if e.info else "")) async for e in q.executions.list()]
    )


async def test_bad_calls_change_nothing_stored(tmp_path: Path) -> None:
    q = Queue(jobs=[add, unstorable], storage=f"sqlite:///{tmp_path / 'q.db'}")
    await q.start(worker=False)
    try:
        await q.jobs.add.start_many([{"a": i, "b": i} for i in range(5)])
        before = await _snapshot(q)
        assert len(before) == 5

        with pytest.raises(pydantic.ValidationError, match="a"):
            await q.jobs.add.start(a="x", b=1)
        with pytest.raises(pydantic.ValidationError):
            await q.jobs.add.start_many([{"a": 1, "b": 2}, {"a": "bad", "b": 2}])
        with pytest.raises(qanat.UnknownJob, match="no job named 'sub'"):
            await q.jobs.sub.start(a=1, b=2)
        with pytest.raises(ValueError, match="invalid delay '3 fortnights'"):
            await q.jobs.add.start(a=1, b=2, delay="3 fortnights")
        with pytest.raises(ValueError, match="naive"):
            from datetime import datetime

            await q.jobs.add.start(a=1, b=2, deadline=datetime(2030, 1, 1))
        assert await _snapshot(q) == before
    finally:
        await q.stop()


async def test_unserializable_step_result_fails_that_execution_only(tmp_path: Path) -> None:
    q = Queue(jobs=[add, unstorable], storage=f"sqlite:///{tmp_path / 'q.db'}")
    async with q:
        ok = await q.jobs.add.start(a=1, b=2)
        bad = await q.jobs.unstorable.start()
        with pytest.raises(TypeError, match="cannot store the result of step 'socket'"):
            await bad.result(timeout=10)
        assert await ok.result(timeout=10) == 3


def test_definition_errors_name_what_was_wrong() -> None:
    with pytest.raises(ValueError, match="'soon'"):

        @job(timeout="soon")
        async def a() -> None: ...

    with pytest.raises(ValueError, match="'every day'"):

        @job(backoff="every day")
        async def b() -> None: ...

    with pytest.raises(
        qanat.ConfigurationError, match="Queue\\(concurrency=\\) must be an int >= 1"
    ):
        Queue(jobs=[], storage="memory://", concurrency=0)
    with pytest.raises(qanat.ConfigurationError, match="takes Job objects"):
        Queue(jobs=[lambda: None], storage="memory://")  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://x", "ftp://x"),
        ("postgresql://localhost/db?schema=Bad-Name", "schema='Bad-Name' is not a plain"),
        ("redis://localhost/0?prefix=a{b}", "without braces"),
    ],
)
def test_bad_storage_urls(url: str, message: str) -> None:
    with pytest.raises(qanat.StorageError, match=message):
        from_url(url)


async def test_foreign_file_refused_at_start_and_left_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database" * 100)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    q = Queue(jobs=[add], storage=f"sqlite:///{path}")
    with pytest.raises(qanat.StorageError, match="not a qanat database"):
        await q.start()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


async def test_jobs_from_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "jobs"
    folder.mkdir()
    (folder / "maths.py").write_text(
        "from qanat import job\n\n@job\nasync def triple(n: int) -> int:\n    return n * 3\n"
    )
    q = Queue(jobs=str(folder), storage="memory://")
    async with q:
        assert await q.jobs.triple.run(n=2) == 6
    with pytest.raises(qanat.ConfigurationError, match="not a folder"):
        Queue(jobs=str(tmp_path / "missing"), storage="memory://")
