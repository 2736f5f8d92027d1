"""Commands packed by hiredis are byte for byte what redis-py's own packing makes."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection

from qanat.storage.redis.packing import fast_packing


@pytest.mark.parametrize(
    "args",
    [
        ("EVALSHA", "d5c2c1", 1, "{q}", "id", "é ünïcode", "", 30.0, 0.1 + 0.2, -7, b"raw"),
        ("CONFIG GET", "maxmemory-policy"),  # a name with a space: redis-py splits it
        ("XREAD", "BLOCK", 2000, "COUNT", 1, "STREAMS", "{q}:bell", "0-0"),
    ],
)
def test_packed_like_redis_py(args: tuple[Any, ...]) -> None:
    plain = Connection(decode_responses=True)
    fast = fast_packing(Connection)(decode_responses=True)
    assert b"".join(fast.pack_command(*args)) == b"".join(plain.pack_command(*args))


def test_one_subclass_per_connection_kind() -> None:
    for base in (Connection, SSLConnection, UnixDomainSocketConnection):
        made = fast_packing(base)
        assert issubclass(made, base) and made is not base
        assert fast_packing(base) is made
