"""Redis specifics beyond the shared contract: the URL, refusals at open, the durability
warnings, server time, the one-slot key layout and the wake-up stream."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis

from qanat.errors import StorageError
from qanat.storage import RedisStorage, from_url
from qanat.storage.base import ExecutionRecord
from qanat.storage.redis import LAYOUT
from services import RedisServer, _free_port


def test_from_url_reads_prefix_and_keeps_the_rest(redis_url: str) -> None:
    store = from_url("rediss://:pw@cache.example:6380/2?prefix=jobs&ssl_cert_reqs=none")
    assert isinstance(store, RedisStorage)
    assert store.prefix == "jobs" and store.key == "{jobs}"
    assert store.url == "rediss://:pw@cache.example:6380/2?ssl_cert_reqs=none"
    assert from_url("redis://localhost").prefix == "qanat"  # type: ignore[attr-defined]
    with pytest.raises(StorageError, match="invalid Redis URL") as info:
        from_url("redis://:secret@localhost/0?prefix={x}")
    assert "secret" not in str(info.value)


async def test_unreachable_server_is_a_clear_error() -> None:
    store = RedisStorage(f"redis://:secret@127.0.0.1:{_free_port()}/0")
    with pytest.raises(StorageError, match="cannot reach Redis") as info:
        await store.open()
    assert "secret" not in str(info.value)


@pytest.fixture(scope="module")
def locked_server() -> Iterator[RedisServer]:
    server = RedisServer(password="right")
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_wrong_password_is_refused(locked_server: RedisServer) -> None:
    url = locked_server.url.replace(":right@", ":wrong@")
    with pytest.raises(StorageError, match="refused the login") as info:
        await RedisStorage(url).open()
    assert "wrong" not in str(info.value)
    ok = RedisStorage(locked_server.url, prefix="auth_ok")
    await ok.open()
    await ok.close()


async def test_foreign_keys_and_a_newer_layout_are_refused(redis_url: str) -> None:
    raw = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        await raw.set("{theirs}:cache:1", "x")
        with pytest.raises(StorageError, match="not qanat's"):
            await RedisStorage(redis_url, prefix="theirs").open()
        await raw.hset("{future}:meta", mapping={"app": "qanat", "layout": str(LAYOUT + 1)})
        with pytest.raises(StorageError, match="newer qanat"):
            await RedisStorage(redis_url, prefix="future").open()
        assert await raw.get("{theirs}:cache:1") == "x"  # nothing of theirs was touched
    finally:
        await raw.aclose()


async def test_persistence_off_and_eviction_are_warned_about(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    raw = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        await raw.config_set("appendonly", "no")
        await raw.config_set("maxmemory-policy", "allkeys-lru")
        with caplog.at_level(logging.WARNING, logger="qanat"):
            store = RedisStorage(redis_url, prefix="warned")
            await store.open()
            await store.close()
    finally:
        await raw.config_set("appendonly", "yes")
        await raw.config_set("maxmemory-policy", "noeviction")
        await raw.aclose()
    text = caplog.text
    assert "persistence off" in text and "allkeys-lru" in text


async def test_every_key_is_in_the_prefix_slot_and_times_are_the_servers(redis_url: str) -> None:
    store = RedisStorage(redis_url, prefix="slot_check")
    await store.open()
    raw = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        server_now = await store.now()
        rec = ExecutionRecord("e1", "j", "{}", created_at=1.0, run_at=1.0, available_at=1.0)
        await store.enqueue([rec])
        got = await store.claim("w1", ["j"], 1, 30.0)  # at=None: the server's TIME
        assert [r.id for r in got] == ["e1"]
        assert got[0].available_at is not None
        assert abs(got[0].available_at - (server_now + 30.0)) < 5.0
        assert abs(store.clock() - server_now) < 5.0
        keys = [k async for k in raw.scan_iter(match="*slot_check*")]
        assert keys and all(k.startswith("{slot_check}:") for k in keys)
    finally:
        await raw.aclose()
        await store.close()


async def test_listen_wakes_on_another_processes_commit(redis_url: str) -> None:
    store = RedisStorage(redis_url, prefix="bell_check")
    other = RedisStorage(redis_url, prefix="bell_check")
    await store.open()
    await other.open()
    try:
        rang = asyncio.Event()
        stop = store.listen(rang.set)
        assert stop is not None
        await asyncio.wait_for(rang.wait(), 5)  # the first call: connected
        rang.clear()
        await other.enqueue([ExecutionRecord("b1", "j", "{}")])
        await asyncio.wait_for(rang.wait(), 5)
        assert await store.changed()
        stop()
    finally:
        await store.close()
        await other.close()
