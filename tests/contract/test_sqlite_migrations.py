"""A database written by the first schema is migrated in place, keeping its data."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from qanat.storage.base import ExecutionFilter, ExecutionRecord
from qanat.storage.sqlite import SqliteStorage, _statements, migrations, schema_version


def _write_version_1(path: Path, rec: ExecutionRecord) -> None:
    """A database as the first schema left it, holding one execution."""
    conn = sqlite3.connect(path, isolation_level=None)
    number, script = migrations()[0]
    assert number == 1
    conn.execute("BEGIN")
    for sql in _statements(script):
        conn.execute(sql)
    conn.execute("INSERT OR REPLACE INTO qanat_meta (key, value) VALUES ('schema_version', '1')")
    # the columns of version 1 only (later migrations add more)
    conn.execute(
        "INSERT INTO executions (id, job, input, status, created_at, run_at, available_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (rec.id, rec.job, rec.input, rec.status, rec.created_at, rec.run_at, rec.available_at),
    )
    conn.execute("COMMIT")
    conn.close()


def _begin_at_version(path: Path, version: int) -> sqlite3.Connection:
    """A new database file as schema ``version`` left it, in an open transaction for the
    test's rows (the caller commits)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    for _number, script in migrations()[:version]:
        for sql in _statements(script):
            conn.execute(sql)
    conn.execute(
        "INSERT OR REPLACE INTO qanat_meta (key, value) VALUES ('schema_version', ?)",
        (str(version),),
    )
    return conn


async def test_version_1_file_is_migrated_to_current_and_keeps_its_rows(tmp_path: Path) -> None:
    assert schema_version() > 1, "this test needs at least one migration after the first"
    path = tmp_path / "old.db"
    _write_version_1(path, ExecutionRecord(id="e1", job="j", input='{"n": 1}', created_at=1.0))

    store = SqliteStorage(str(path))
    await store.open()
    try:
        page = await store.query(ExecutionFilter(), 10, None)
        assert [(e.id, e.input) for e in page.items] == [("e1", '{"n": 1}')]
        # columns added later have their defaults (version 6: no recoveries yet)
        assert (page.items[0].recoveries, page.items[0].step_in_flight) == (0, None)
        assert (await store.events(None, None, 10, None)).items == []  # a later table works
    finally:
        await store.close()

    conn = sqlite3.connect(path)
    (version,) = conn.execute(
        "SELECT value FROM qanat_meta WHERE key = 'schema_version'"
    ).fetchone()
    conn.close()
    assert int(version) == schema_version()


async def test_version_5_file_gains_the_recovery_count(tmp_path: Path) -> None:
    """Version 6 adds ``recoveries`` and ``step_in_flight``; an execution running under
    version 5 is counted from 0 when a worker of the new version takes it over."""
    path = tmp_path / "v5.db"
    conn = _begin_at_version(path, 5)
    conn.execute(
        "INSERT INTO executions (id, job, input, status, owner, created_at, run_at, "
        "available_at) VALUES ('e1', 'j', '{}', 'running', 'gone', 1.0, 1.0, 2.0)"
    )
    conn.execute("COMMIT")
    conn.close()

    store = SqliteStorage(str(path))
    await store.open()
    try:
        [taken] = await store.claim("w", ["j"], 1, 30.0, 3.0)  # the old lease lapsed
        assert (taken.owner, taken.recoveries, taken.step_in_flight) == ("w", 1, None)
    finally:
        await store.close()


async def test_version_10_steps_move_into_the_clustered_table_whole(tmp_path: Path) -> None:
    """Version 11 rebuilds ``steps`` WITHOUT ROWID, keyed by (execution_id, key): every
    recorded step survives as it was, is read back in start order, and a checkpoint at
    a recorded key still replaces it rather than adding a second row."""
    from qanat.storage.base import Checkpoint, StepRecord

    path = tmp_path / "v10.db"
    conn = _begin_at_version(path, 10)
    conn.execute(
        "INSERT INTO executions (id, job, status, owner, created_at, run_at, available_at) "
        "VALUES ('e1', 'j', 'running', 'w', 1.0, 1.0, 1e12)"
    )
    conn.execute("INSERT INTO inputs (id, input) VALUES ('e1', '{}')")
    steps = [  # stored out of start order: the read orders them
        ("e1", "b", "run", "b", "completed", '"B"', None, 2, 1, 20.0, 21.0),
        ("e1", "a", "run", "a", "failed", None, '{"type": "X"}', 3, 1, 10.0, 11.0),
        ("e1", "c", "sleep", "c", "completed", None, None, 1, 2, 30.0, 30.5),
    ]
    conn.executemany(
        "INSERT INTO steps (execution_id, key, kind, name, status, result, error, attempts, "
        "job_attempt, started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        steps,
    )
    conn.execute("COMMIT")
    conn.close()

    store = SqliteStorage(str(path))
    await store.open()
    try:
        got = await store.steps("e1")
        assert got == [
            StepRecord(*steps[1]),
            StepRecord(*steps[0]),
            StepRecord(*steps[2]),
        ]
        again = StepRecord("e1", "a", "run", "a", "completed", '"A"', None, 4, 1, 10.0, 12.0)
        assert await store.checkpoint("e1", "w", Checkpoint(again, [])) is None
        assert [s.result for s in await store.steps("e1")] == ['"A"', '"B"', None]
    finally:
        await store.close()

    conn = sqlite3.connect(path)
    (ddl,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'steps'").fetchone()
    conn.close()
    assert "WITHOUT ROWID" in ddl
