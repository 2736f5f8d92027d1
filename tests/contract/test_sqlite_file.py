"""What only the SQLite backend has: a file on disk, several processes, URLs."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from qanat.errors import StorageError
from qanat.storage import (
    ExecutionFilter,
    ExecutionRecord,
    Finish,
    MemoryStorage,
    SqliteStorage,
    from_url,
)
from qanat.storage.base import now
from qanat.storage.sqlite import PAGE_SIZE, schema_version


def rec(ident: str, **kw: Any) -> ExecutionRecord:
    kw.setdefault("created_at", 1.0)
    kw.setdefault("run_at", 1.0)
    kw.setdefault("available_at", 1.0)
    return ExecutionRecord(id=ident, job=kw.pop("job", "j"), input="{}", **kw)


async def pragma(store: SqliteStorage, name: str) -> Any:
    """Read a pragma on the writer connection, on its own thread."""

    def read(conn: sqlite3.Connection) -> Any:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]

    return await store._w(read)


async def refused(path: Path) -> str:
    before = await asyncio.to_thread(path.read_bytes)
    store = SqliteStorage(str(path))
    with pytest.raises(StorageError) as info:
        await store.open()
    await store.close()
    after = await asyncio.to_thread(path.read_bytes)
    assert after == before, "a refused file must be left byte for byte unchanged"
    message = str(info.value)
    assert str(path) in message
    return message


async def test_a_file_that_is_not_sqlite_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database\n" * 200)
    assert "is not a qanat database" in await refused(path)


async def test_a_foreign_sqlite_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO users (name) VALUES ('ada')")
    conn.commit()
    conn.close()
    assert "is not a qanat database" in await refused(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # not switched to WAL
    conn.close()


async def test_a_newer_schema_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    store = SqliteStorage(str(path))
    await store.open()
    await store.enqueue([rec("a")])
    await store.close()
    conn = sqlite3.connect(path)
    newer = schema_version() + 1
    conn.execute("UPDATE qanat_meta SET value = ? WHERE key = 'schema_version'", (str(newer),))
    conn.commit()
    conn.close()
    message = await refused(path)
    assert f"newer qanat (schema {newer})" in message
    assert f"understands up to {schema_version()}" in message


async def test_a_damaged_qanat_file_is_refused_untouched_with_how_to_recover(
    tmp_path: Path,
) -> None:
    whole = tmp_path / "whole.db"
    store = SqliteStorage(str(whole))
    await store.open()
    await store.enqueue([rec(f"e{i}") for i in range(3000)])
    await store.close()
    data = whole.read_bytes()
    for fraction in (0.5, 0.1):  # a truncated (interrupted or partial) copy
        path = tmp_path / f"copy-{fraction}.db"
        path.write_bytes(data[: int(len(data) * fraction)])
        message = await refused(path)
        assert "is a damaged SQLite file (SQLite: database disk image is malformed)" in message
        assert "is not a qanat database" not in message
        assert f'sqlite3 {path} ".recover" | sqlite3 recovered.db' in message
        assert "Backups and damaged files" in message


async def test_missing_and_empty_files_are_created(tmp_path: Path) -> None:
    for path in (tmp_path / "new.db", tmp_path / "empty.db"):
        if path.name == "empty.db":
            path.write_bytes(b"")
        store = SqliteStorage(str(path))
        await store.open()
        assert await pragma(store, "journal_mode") == "wal"
        assert await pragma(store, "synchronous") == 2  # FULL
        assert await pragma(store, "page_size") == PAGE_SIZE == 1024
        await store.close()
        conn = sqlite3.connect(path)
        meta = dict(conn.execute("SELECT key, value FROM qanat_meta").fetchall())
        conn.close()
        assert meta == {"application": "qanat", "schema_version": str(schema_version())}


async def test_a_database_with_other_pages_keeps_them_and_its_executions(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    store = SqliteStorage(str(path))
    await store.open()
    await store.enqueue([rec(f"e{i}") for i in range(50)])
    await store.close()
    conn = sqlite3.connect(path)  # as an older qanat made it: SQLite's 4 KiB pages
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.execute("PRAGMA page_size = 4096")
    conn.execute("VACUUM")
    assert conn.execute("PRAGMA page_size").fetchone()[0] == 4096
    conn.close()
    store = SqliteStorage(str(path))
    await store.open()
    try:
        assert await pragma(store, "page_size") == 4096
        assert await pragma(store, "journal_mode") == "wal"
        await store.enqueue([rec("more")])
        assert len(await store.get_many([f"e{i}" for i in range(50)] + ["more"])) == 51
    finally:
        await store.close()


async def test_a_missing_folder_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "q.db"
    store = SqliteStorage(str(path))
    with pytest.raises(StorageError, match="nowhere"):
        await store.open()
    await store.close()


async def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "q.db")
    store = SqliteStorage(path)
    await store.open()
    await store.enqueue([rec("a", key="k"), rec("b")])
    await store.claim("w", ["j"], 1, 30.0, now())
    await store.close()
    store = SqliteStorage(path)
    await store.open()
    try:
        a = await store.get("a")
        assert a is not None and a.status == "running" and a.owner == "w"
        assert (await store.enqueue([rec("c", key="k")]))[0].id == "a"
        page = await store.query(ExecutionFilter(), 10, None)
        assert sorted(r.id for r in page.items) == ["a", "b"]
    finally:
        await store.close()


async def test_changed_notices_commits_of_another_instance(tmp_path: Path) -> None:
    path = str(tmp_path / "q.db")
    one, two = SqliteStorage(path), SqliteStorage(path)
    await one.open()
    await two.open()
    try:
        await one.changed()
        assert not await one.changed()
        await two.enqueue([rec("a")])
        assert await one.changed()
        assert not await one.changed()
        await one.enqueue([rec("b")])  # our own writer is another connection too
        assert await one.changed()
    finally:
        await one.close()
        await two.close()


async def test_two_instances_never_claim_the_same_execution(tmp_path: Path) -> None:
    path = str(tmp_path / "q.db")
    one, two = SqliteStorage(path), SqliteStorage(path)
    await one.open()
    await two.open()
    try:
        await one.enqueue([rec(f"e{i:03d}", created_at=float(i)) for i in range(500)])

        async def drain(store: SqliteStorage, owner: str) -> list[str]:
            taken: list[str] = []
            while True:
                got = await store.claim(owner, ["j"], 7, 60.0, now())
                if not got:
                    return taken
                taken.extend(r.id for r in got)

        jobs = [drain(s, f"w{i}") for i in range(3) for s in (one, two)]
        results = await asyncio.gather(*jobs)
        everything = [i for taken in results for i in taken]
        assert len(everything) == 500
        assert len(set(everything)) == 500
        # (which instance gets how many is up to SQLite's busy handler: not asserted)
    finally:
        await one.close()
        await two.close()


async def test_a_failing_operation_does_not_poison_its_batch(tmp_path: Path) -> None:
    store = SqliteStorage(str(tmp_path / "q.db"))
    await store.open()
    try:
        await store.enqueue([rec("dup")])
        calls = [store.enqueue([rec(f"ok{i}")]) for i in range(20)]
        calls.insert(10, store.enqueue([rec("dup")]))  # same id: an integrity error
        results = await asyncio.gather(*calls, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        assert len(errors) == 1 and isinstance(errors[0], StorageError)
        assert len(await store.get_many([f"ok{i}" for i in range(20)])) == 20
    finally:
        await store.close()


async def test_pending_writes_are_committed_by_close(tmp_path: Path) -> None:
    path = str(tmp_path / "q.db")
    store = SqliteStorage(path)
    await store.open()
    tasks = [asyncio.ensure_future(store.enqueue([rec(f"e{i}")])) for i in range(50)]
    await asyncio.sleep(0)
    await store.close()
    await asyncio.gather(*tasks)
    store = SqliteStorage(path)
    await store.open()
    try:
        assert len(await store.get_many([f"e{i}" for i in range(50)])) == 50
        await store.claim("w", ["j"], 1, 30.0, now())
        assert await store.finish("e0", "w", Finish("completed")) in (True, False)
    finally:
        await store.close()
    with pytest.raises(StorageError, match="not open"):
        await store.get("e0")


# --- URLs -------------------------------------------------------------------------------


async def test_url_synchronous_normal_is_honoured(tmp_path: Path) -> None:
    store = from_url(f"sqlite:///{tmp_path}/q.db?synchronous=normal")
    assert isinstance(store, SqliteStorage)
    await store.open()
    try:
        assert await pragma(store, "synchronous") == 1  # NORMAL
    finally:
        await store.close()


def test_from_url_schemes(tmp_path: Path) -> None:
    assert isinstance(from_url("memory://"), MemoryStorage)
    rel = from_url("sqlite:///data/q.db")
    assert isinstance(rel, SqliteStorage) and rel.path == "data/q.db"
    absolute = from_url("sqlite:////var/lib/q.db")
    assert isinstance(absolute, SqliteStorage) and absolute.path == "/var/lib/q.db"
    bare = from_url("jobs.db")
    assert isinstance(bare, SqliteStorage) and bare.path == "jobs.db"
    normal = from_url("sqlite:///q.db?synchronous=normal")
    assert isinstance(normal, SqliteStorage) and normal.synchronous == "normal"


@pytest.mark.parametrize(
    "url",
    [
        "mysql://db/q",
        "q.sqlite",
        "sqlite:///q.db?synchronous=off",
        "sqlite:///q.db?x=1",
    ],
)
def test_from_url_refuses_what_it_cannot_use(url: str) -> None:
    with pytest.raises(StorageError) as info:
        from_url(url)
    assert url in str(info.value)
    if url.startswith("mysql") or url == "q.sqlite":
        assert "memory://" in str(info.value) and "sqlite:///" in str(info.value)


async def test_group_committed_finishes_keep_one_by_one_semantics(tmp_path: Path) -> None:
    store = SqliteStorage(str(tmp_path / "q.db"))
    await store.open()
    try:
        await store.enqueue([rec("parent", job="p")] + [rec(f"e{i}") for i in range(30)])
        await store.claim("w", ["p"], 1, 60.0, now())
        await store.enqueue([rec("child", job="c", parent_id="parent")])
        assert await store.suspend("parent", "w", "waiting", None)
        assert len(await store.claim("w", ["j", "c"], 100, 60.0, now())) == 31
        # one batch, one statement: the wrong owner and the unknown id are refused
        calls = [
            store.finish(f"e{i}", "w", Finish("completed", output=f'"{i}"')) for i in range(20)
        ]
        calls.insert(7, store.finish("e20", "intruder", Finish("failed")))
        calls.insert(9, store.finish("child", "w", Finish("completed", output="null")))
        calls.insert(11, store.finish("missing", "w", Finish("completed")))
        results = await asyncio.gather(*calls)
        assert [i for i, ok in enumerate(results) if not ok] == [7, 11]
        # the same execution twice in a batch: the second one finds it finished
        calls = [store.finish(f"e{i}", "w", Finish("failed", error='"x"')) for i in range(20, 30)]
        calls.append(store.finish("e20", "w", Finish("completed")))
        assert await asyncio.gather(*calls) == [True] * 10 + [False]
        for i in range(30):
            got = await store.get(f"e{i}")
            assert got is not None and got.owner is None
            assert (got.status, got.output) == (
                ("completed", f'"{i}"') if i < 20 else ("failed", None)
            )
        parent = await store.get("parent")
        assert parent is not None and parent.available_at is not None  # woken by its child
    finally:
        await store.close()


def _open_and_close(path: str, go_at: float, out: Any) -> None:
    import time

    time.sleep(max(0.0, go_at - time.time()))

    async def go() -> None:
        store = SqliteStorage(path)
        await store.open()
        await store.close()

    try:
        asyncio.run(go())
        out.put("ok")
    except Exception as exc:  # reported to the test, which fails on it
        out.put(repr(exc))


def test_processes_creating_one_new_file_at_once_all_open_it(tmp_path: Path) -> None:
    """Switching a new file to WAL can find it locked by another opener, and SQLite does
    not wait there: every opener must still succeed."""
    import multiprocessing
    import time

    ctx = multiprocessing.get_context("fork")
    for trial in range(8):
        path = str(tmp_path / f"race{trial}.db")
        out = ctx.Queue()
        go_at = time.time() + 0.15
        procs = [ctx.Process(target=_open_and_close, args=(path, go_at, out)) for _ in range(5)]
        for p in procs:
            p.start()
        results = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join()
        assert results == ["ok"] * 5, results
