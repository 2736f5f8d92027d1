"""PostgreSQL-only checks on the session's real server (tests/services.py): what is
refused at open (and left unchanged), migrations raced by many workers, and the limits
that SQLite's single writer gets for free but concurrent PostgreSQL claimers must
serialise (concurrency windows, idempotency keys)."""

from __future__ import annotations

import asyncio
import itertools
import socket
import urllib.parse

import psycopg
import pytest

from qanat.errors import StorageError
from qanat.storage import ExecutionRecord, Finish, PostgresStorage, from_url
from qanat.storage.flow import FlowSpec, gate_id
from qanat.storage.postgres import schema_version
from qanat.storage.sqlcore.dialect import PostgresDialect
from services import PostgresServer

T0 = 1_700_000_000.0
_names = itertools.count()


def fresh_schema() -> str:
    return f"pgtest_{next(_names)}"


def with_password(url: str, password: str) -> str:
    parts = urllib.parse.urlsplit(url)
    netloc = f"{parts.username}:{password}@{parts.hostname}:{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def tables(url: str, schema: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
            "ORDER BY table_name",
            (schema,),
        ).fetchall()
    return [r[0] for r in rows]


def test_from_url_builds_postgres_storage(postgres_url: str) -> None:
    store = from_url(postgres_url.replace("postgresql://", "postgres://") + "?schema=q1")
    assert isinstance(store, PostgresStorage) and store.schema == "q1"
    assert "qanat-test-pw" not in repr(store)
    assert isinstance(from_url(postgres_url), PostgresStorage)


async def test_wrong_password_is_refused_with_the_password_redacted(postgres_url: str) -> None:
    store = PostgresStorage(with_password(postgres_url, "not-the-pw-123"), schema=fresh_schema())
    with pytest.raises(StorageError, match="refused the user name or password") as info:
        await store.open()
    assert "not-the-pw-123" not in str(info.value) and "***" in str(info.value)


async def test_unreachable_server_is_refused_at_open() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    store = PostgresStorage(f"postgresql://u:secret-pw@127.0.0.1:{port}/db", schema="qanat")
    with pytest.raises(StorageError, match="cannot connect to PostgreSQL") as info:
        await asyncio.wait_for(store.open(), 30)
    assert "secret-pw" not in str(info.value)


async def test_schema_of_someone_else_is_refused_and_left_unchanged(postgres_url: str) -> None:
    schema = fresh_schema()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.notes (body text)")
    store = PostgresStorage(postgres_url, schema=schema)
    with pytest.raises(StorageError, match="not qanat's \\(notes\\)"):
        await store.open()
    assert tables(postgres_url, schema) == ["notes"]


async def test_newer_schema_is_refused_and_left_unchanged(postgres_url: str) -> None:
    schema = fresh_schema()
    store = PostgresStorage(postgres_url, schema=schema)
    await store.open()
    await store.close()
    before = tables(postgres_url, schema)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"UPDATE {schema}.qanat_meta SET value = '999' WHERE key = 'schema_version'")
    with pytest.raises(StorageError, match="newer qanat \\(schema 999\\)"):
        await PostgresStorage(postgres_url, schema=schema).open()
    assert tables(postgres_url, schema) == before
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        row = conn.execute(f"SELECT value FROM {schema}.qanat_meta WHERE key = 'schema_version'")
        assert row.fetchone() == ("999",)


async def test_workers_starting_at_once_migrate_the_schema_once(postgres_url: str) -> None:
    schema = fresh_schema()
    stores = [PostgresStorage(postgres_url, schema=schema) for _ in range(10)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            rows = conn.execute(f"SELECT key, value FROM {schema}.qanat_meta ORDER BY key")
            assert rows.fetchall() == [
                ("application", "qanat"),
                ("schema_version", str(schema_version())),
            ]
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_window_holds_under_concurrent_claimers(postgres_url: str) -> None:
    """Eight connections claim at once from one backlog behind concurrency=3: never more
    than 3 running (counting inside READ COMMITTED + SKIP LOCKED alone would allow more)."""
    schema = fresh_schema()
    stores = [PostgresStorage(postgres_url, schema=schema) for _ in range(8)]
    for s in stores:
        await s.open()
    try:
        spec = FlowSpec(window=(gate_id("j", "window", None), 3)).dump()
        await stores[0].enqueue(
            [
                ExecutionRecord(f"e{i:03}", "j", "{}", created_at=T0, run_at=T0,
                                available_at=T0, flow=spec)
                for i in range(60)
            ]
        )  # fmt: skip
        running: dict[str, int] = {}
        for _round in range(12):
            got = await asyncio.gather(
                *(s.claim(f"w{n}", ["j"], 2, 30.0, T0 + 1) for n, s in enumerate(stores))
            )
            for n, taken in enumerate(got):
                for r in taken:
                    running[r.id] = n
            assert len(running) <= 3, f"{len(running)} running behind concurrency=3"
            for n, s in enumerate(stores):  # one by one the limit is reached, not starved
                for r in await s.claim(f"w{n}", ["j"], 2, 30.0, T0 + 1):
                    running[r.id] = n
            assert len(running) == 3
            done = sorted(running)[0]
            n = running.pop(done)
            assert await stores[n].finish(done, f"w{n}", Finish("completed"))
    finally:
        for s in stores:
            await s.close()


async def test_a_held_gate_blocks_only_its_own_key(postgres_url: str) -> None:
    """Flow control locks per gate key: while another transaction decides on gate A
    (holds its advisory lock), a claim passes over A's executions and still takes B's."""
    schema = fresh_schema()
    store = PostgresStorage(postgres_url, schema=schema)
    await store.open()
    gate_a, gate_b = gate_id("j", "window", "a"), gate_id("j", "window", "b")
    recs = [
        ExecutionRecord(f"{g[-3]}{i}", "j", "{}", created_at=T0, run_at=T0, available_at=T0,
                        flow=FlowSpec(window=(g, 5)).dump())
        for g in (gate_a, gate_b)
        for i in range(2)
    ]  # fmt: skip
    try:
        await store.enqueue(recs)
        with psycopg.connect(postgres_url, autocommit=True) as other:
            with other.transaction():
                other.execute(PostgresDialect.FLOW_LOCK.replace("$1", "%s"), ([gate_a],))
                taken = await store.claim("w", ["j"], 10, 30.0, T0 + 1)
                assert sorted(r.id for r in taken) == ["b0", "b1"]
            # the lock is gone with that transaction: A's executions are claimable again
            taken = await store.claim("w", ["j"], 10, 30.0, T0 + 1)
            assert sorted(r.id for r in taken) == ["a0", "a1"]
    finally:
        await store.close()


async def test_idempotency_key_raced_by_eight_connections_stores_one(postgres_url: str) -> None:
    schema = fresh_schema()
    stores = [PostgresStorage(postgres_url, schema=schema) for _ in range(8)]
    for s in stores:
        await s.open()
    try:
        got = await asyncio.gather(
            *(
                s.enqueue([ExecutionRecord(f"x{n}", "j", "{}", key="same", created_at=T0,
                                           run_at=T0, available_at=T0)])
                for n, s in enumerate(stores)
            )
        )  # fmt: skip
        ids = {batch[0].id for batch in got}
        assert len(ids) == 1
        taken = await stores[0].claim("w", ["j"], 10, 30.0, T0 + 1)
        assert [r.id for r in taken] == list(ids)
    finally:
        for s in stores:
            await s.close()


def _rec(ident: str) -> ExecutionRecord:
    return ExecutionRecord(ident, "j", "{}", created_at=T0, run_at=T0, available_at=T0)


async def _rung_by(event: asyncio.Event, action: object, timeout: float = 10.0) -> None:
    event.clear()
    await action  # type: ignore[misc]
    await asyncio.wait_for(event.wait(), timeout)


async def test_a_commit_of_another_process_wakes_listeners(postgres_url: str) -> None:
    schema = fresh_schema()
    waiting, writing = PostgresStorage(postgres_url, schema=schema), None
    await waiting.open()
    try:
        writing = PostgresStorage(postgres_url, schema=schema)
        await writing.open()
        rang = asyncio.Event()
        stop = waiting.listen(rang.set)
        assert stop is not None
        await asyncio.wait_for(rang.wait(), 10)  # the first call: listening has begun
        await waiting.changed()
        assert not await waiting.changed()
        await _rung_by(rang, writing.enqueue([_rec("a")]))
        assert await waiting.changed()
        assert not await waiting.changed()
        # claims and finishes (one statement each, data-modifying CTEs) ring it too
        [taken] = await writing.claim("w", ["j"], 1, 30.0, None)
        await asyncio.wait_for(rang.wait(), 10)
        await _rung_by(rang, writing.finish(taken.id, "w", Finish("completed", output="1")))
        # a dropped listening connection is re-established, and wakes work again
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query = %s AND pid <> pg_backend_pid()",
                (f"LISTEN qanat_{schema}",),
            ).fetchall()
        assert killed == [(True,)]
        rang.clear()
        await asyncio.wait_for(rang.wait(), 10)  # reconnected (calls back once)
        await _rung_by(rang, writing.enqueue([_rec("b")]))
        stop()
    finally:
        await waiting.close()
        if writing is not None:
            await writing.close()


async def test_notify_off_polls(postgres_url: str) -> None:
    store = from_url(postgres_url + f"?schema={fresh_schema()}&notify=off")
    await store.open()
    try:
        assert store.listen(lambda: None) is None
        assert await store.changed()
        assert not await store.changed()  # polled again only after POLL_ONLY
    finally:
        await store.close()
    with pytest.raises(StorageError, match="notify='maybe' is not on or off"):
        from_url(postgres_url + "?notify=maybe")


async def test_server_restart_fails_calls_clearly_then_carries_on(
    postgres_server: PostgresServer,
) -> None:
    """A crash-restart of the server (immediate shutdown) while storage is open: what was
    committed is there afterwards, a call that meets the dropped connection raises a
    StorageError, and the next calls run on a new connection (no restart of qanat)."""
    store = PostgresStorage(postgres_server.url, schema=fresh_schema())
    await store.open()
    try:
        await store.enqueue([_rec("before")])
        rang = asyncio.Event()
        stop = store.listen(rang.set)
        assert stop is not None
        postgres_server.restart()
        failed = 0
        for _ in range(2):  # the writer's and the reader's connections each notice once
            try:
                await store.enqueue([_rec(f"x{failed}")])
                await store.get("before")
            except StorageError as exc:
                assert "PostgreSQL storage" in str(exc) and "qanat-test-pw" not in str(exc)
                failed += 1
        assert failed >= 1
        await store.enqueue([_rec("after")])
        got = {r.id for r in await store.get_many(["before", "after"])}
        assert got == {"before", "after"}
        rang.clear()
        # a commit after the clear: heard if the listener is back, else its reconnection
        # calls back (it may have come back and heard "after" before the clear)
        await store.enqueue([_rec("later")])
        await asyncio.wait_for(rang.wait(), 20)  # the listener reconnected (and notifies)
        stop()
    finally:
        await store.close()
