"""Payloads in tables of their own (``sqlite_008_payloads``, ``postgres_002_payloads``):
a database written by the previous schema migrates and keeps every execution with its
input and output; after that, status updates leave the payload rows alone."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
from psycopg import sql

from qanat.storage import ExecutionRecord, Finish, PostgresStorage
from qanat.storage.base import ExecutionFilter
from qanat.storage.postgres import migrations as pg_migrations
from qanat.storage.postgres import schema_version as pg_schema_version
from qanat.storage.sqlite import SqliteStorage, _statements, migrations, schema_version

T0 = 1_700_000_000.0
BIG = '{"blob": "' + "x" * 300_000 + '"}'
#: (id, job, input, status, output, owner, available_at, completed_at, parent_id)
OLD_ROWS = [
    ("done", "j", '{"n": 1}', "completed", '{"ok": true}', None, None, T0 + 5, None),
    ("big", "j", BIG, "pending", None, None, T0, None, None),
    ("kid", "j", '{"n": 3}', "failed", None, None, None, T0 + 6, "done"),
    ("run", "j", '{"n": 4}', "running", None, "gone", T0 + 1, None, None),
]
INSERT_OLD = (
    "INSERT INTO executions (id, job, input, status, output, owner, available_at, "
    "completed_at, parent_id, created_at, run_at) VALUES ({}, {})"
)


def _write_sqlite_version_7(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    for _number, script in migrations()[:7]:
        for stmt in _statements(script):
            conn.execute(stmt)
    conn.execute("INSERT OR REPLACE INTO qanat_meta (key, value) VALUES ('schema_version', '7')")
    for row in OLD_ROWS:
        conn.execute(INSERT_OLD.format(", ".join("?" * len(row)), "?, ?"), (*row, T0, T0))
    conn.execute(
        "INSERT INTO steps (execution_id, key, kind, name, status, result, started_at, "
        "finished_at) VALUES ('done', 'a', 'run', 'a', 'completed', '7', ?, ?)",
        (T0, T0),
    )
    conn.execute("COMMIT")
    conn.close()


def _size(path: Path) -> int:
    return path.stat().st_size


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]


async def _check_kept(store: SqliteStorage | PostgresStorage) -> None:
    """Every old execution reads back whole; the running one can be taken over and
    finished, its output landing in the outputs table."""
    page = await store.query(ExecutionFilter(), 10, None)
    got = {e.id: (e.job, e.input, e.status, e.output, e.parent_id) for e in page.items}
    assert got == {r[0]: (r[1], r[2], r[3], r[4], r[8]) for r in OLD_ROWS}
    done = await store.get("done")
    assert done is not None and (done.output, done.completed_at) == ('{"ok": true}', T0 + 5)
    assert [s.result for s in await store.steps("done")] == ["7"]
    bare = await store.get_many(["big"], payloads=False)
    assert [(e.id, e.input, e.output) for e in bare] == [("big", "", None)]
    taken = await store.claim("w", ["j"], 5, 30.0, T0 + 100)
    assert {t.id: t.input for t in taken} == {"big": BIG, "run": '{"n": 4}'}
    assert await store.finish("run", "w", Finish("completed", output='"out"'))
    run = await store.get("run")
    assert run is not None and (run.status, run.output, run.input) == (
        "completed",
        '"out"',
        '{"n": 4}',
    )
    # a restarted execution forgets its output; a new one is stored in both tables
    assert await store.restart("kid", T0 + 200) is not None
    await store.enqueue([ExecutionRecord(id="new", job="j", input="[1]", created_at=T0)])
    new = await store.get("new")
    assert new is not None and (new.input, new.output) == ("[1]", None)


async def test_a_version_7_sqlite_file_moves_its_payloads_and_keeps_everything(
    tmp_path: Path,
) -> None:
    assert schema_version() >= 8
    path = tmp_path / "v7.db"
    _write_sqlite_version_7(path)
    store = SqliteStorage(str(path))
    await store.open()
    try:
        await _check_kept(store)
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    try:
        cols = _columns(conn, "executions")
        assert "input" not in cols and "output" not in cols
        n_inputs = conn.execute("SELECT count(*) FROM inputs").fetchone()[0]
        outputs = dict(conn.execute("SELECT id, output FROM outputs").fetchall())
    finally:
        conn.close()
    assert n_inputs == len(OLD_ROWS) + 1
    assert outputs == {"done": '{"ok": true}', "run": '"out"'}


async def test_status_updates_do_not_rewrite_the_payload_rows(tmp_path: Path) -> None:
    """SQLite rewrites a whole row, overflow pages included, on any UPDATE: with the
    input in the executions row, the claim, heartbeat and finish of an execution with a
    300 kB input each wrote 300 kB to the WAL. Now they write a few small pages."""
    path = tmp_path / "q.db"
    wal = Path(str(path) + "-wal")
    store = SqliteStorage(str(path))
    await store.open()
    try:
        await store.enqueue([ExecutionRecord(id="e", job="j", input=BIG, created_at=T0)])
        conn = sqlite3.connect(path)
        try:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            conn.close()
        assert busy == 0 and _size(wal) == 0
        [taken] = await store.claim("w", ["j"], 1, 30.0, T0 + 1)
        assert taken.input == BIG
        assert await store.renew("w", ["e"], 30.0, T0 + 2) == {}
        assert await store.mark("e", "w", "running")
        assert await store.finish("e", "w", Finish("completed", output="1"))
        written = _size(wal)
        done = await store.get("e")
    finally:
        await store.close()
    assert done is not None and (done.input, done.output) == (BIG, "1")
    assert written < len(BIG) // 3, f"status updates wrote {written} bytes to the WAL"


async def test_a_version_1_postgres_schema_moves_its_payloads_and_keeps_everything(
    postgres_url: str,
) -> None:
    assert pg_schema_version() >= 2
    schema = "payload_migration"
    number, script = pg_migrations()[0]
    assert number == 1
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(schema)))
        with conn.transaction():
            psycopg.ClientCursor(conn).execute(script)
            conn.execute(
                "INSERT INTO qanat_meta (key, value) VALUES ('schema_version', '1') "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
            )
            for row in OLD_ROWS:
                conn.execute(
                    INSERT_OLD.format(", ".join(["%s"] * len(row)), "%s, %s"), (*row, T0, T0)
                )
            conn.execute(
                "INSERT INTO steps (execution_id, key, kind, name, status, result, "
                "started_at, finished_at) VALUES ('done', 'a', 'run', 'a', 'completed', '7', "
                "%s, %s)",
                (T0, T0),
            )
    store = PostgresStorage(postgres_url, schema=schema)
    await store.open()
    try:
        await _check_kept(store)
    finally:
        await store.close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        cols = [
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = 'executions'",
                (schema,),
            )
        ]
        conn.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(schema)))
        version = conn.execute(
            "SELECT value FROM qanat_meta WHERE key = 'schema_version'"
        ).fetchone()
        outputs = dict(conn.execute("SELECT id, output FROM outputs").fetchall())
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    assert "input" not in cols and "output" not in cols and "status" in cols
    assert version == (str(pg_schema_version()),)
    assert outputs == {"done": '{"ok": true}', "run": '"out"'}
