"""Storage backends and the contract they share.

``from_url`` turns a storage URL into a backend: ``memory://``, ``sqlite:///relative.db``,
``sqlite:////absolute/path.db`` (``?synchronous=normal``, ``?busy_timeout=5``), a bare
path ending in ``.db``, or ``postgresql://user:pw@host:5432/db?schema=qanat`` (also
``postgres://``; needs the ``qanat[postgres]`` extra, psycopg 3),
``redis://[:password@]host:6379/0?prefix=qanat`` (also ``rediss://`` for TLS; needs the
``qanat[redis]`` extra, redis-py), or ``http://node:4000`` / ``https://`` (an
orchestration node, ``qanat serve``; the ``qanat[http]`` extra).
"""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING, Any

from qanat.errors import StorageError
from qanat.storage.base import (
    Checkpoint,
    EventPage,
    EventRecord,
    ExecutionFilter,
    ExecutionRecord,
    Finish,
    LogRecord,
    Page,
    Stats,
    StepRecord,
    Storage,
    TriggerFailure,
)
from qanat.storage.memory import MemoryStorage
from qanat.storage.sqlite import SqliteStorage
from qanat.storage.urls import redact

if TYPE_CHECKING:
    from qanat.storage.postgres import PostgresStorage
    from qanat.storage.redis import RedisStorage

ACCEPTED = (
    "memory://, sqlite:///relative/path.db, sqlite:////absolute/path.db, "
    "postgresql://user:password@host:5432/database?schema=qanat, "
    "redis://host:6379/0?prefix=qanat, "
    "http(s)://node:4000 (a qanat serve node), or a path ending in .db"
)


def _sqlite(url: str) -> SqliteStorage:
    rest = url.split("://", 1)[1]
    path, _, query = rest.partition("?")
    if not path.startswith("/") or len(path) < 2:
        raise StorageError(
            f"invalid SQLite URL {url!r}: write sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db"
        )
    path = urllib.parse.unquote(path[1:])
    options = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
    synchronous = options.pop("synchronous", "full")
    timeout = options.pop("busy_timeout", "30")
    if options:
        raise StorageError(
            f"unknown option(s) {', '.join(sorted(options))} in SQLite URL {url!r}; "
            "accepted: synchronous=full|normal|extra, busy_timeout=<seconds>"
        )
    try:
        return SqliteStorage(path, synchronous=synchronous, busy_timeout=float(timeout))
    except ValueError as exc:
        raise StorageError(f"invalid SQLite URL {url!r}: {exc}") from None


def _postgres_class() -> type[PostgresStorage]:
    """The PostgreSQL backend, imported on first use: psycopg is an optional dependency
    (``qanat[postgres]``) that SQLite users neither need nor pay the import of."""
    try:
        from qanat.storage import postgres
    except ImportError as exc:
        raise StorageError(
            f"the PostgreSQL backend needs psycopg 3 ({exc}); install qanat[postgres]"
        ) from None
    return postgres.PostgresStorage


def _postgres(url: str) -> Storage:
    parts = urllib.parse.urlsplit(url)
    options = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    schema = "qanat"
    notify = True
    rest: list[tuple[str, str]] = []
    for key, value in options:
        if key == "schema":
            schema = value
        elif key == "notify":
            if value not in ("on", "off"):
                raise StorageError(
                    f"invalid PostgreSQL URL {redact(url)!r}: notify={value!r} is not on or off"
                )
            notify = value == "on"
        else:
            rest.append((key, value))  # libpq's own parameters (sslmode, ...)
    scheme = "postgresql"
    conninfo = urllib.parse.urlunsplit(
        parts._replace(scheme=scheme, query=urllib.parse.urlencode(rest))
    )
    try:
        return _postgres_class()(conninfo, schema=schema, notify=notify)
    except ValueError as exc:
        raise StorageError(f"invalid PostgreSQL URL {redact(url)!r}: {exc}") from None


def _redis_class() -> type[RedisStorage]:
    """The Redis backend, imported on first use (redis-py is the ``qanat[redis]`` extra)."""
    try:
        from qanat.storage import redis
    except ImportError as exc:
        raise StorageError(
            f"the Redis backend needs redis-py ({exc}); install qanat[redis]"
        ) from None
    return redis.RedisStorage


def _redis(url: str) -> Storage:
    parts = urllib.parse.urlsplit(url)
    prefix = "qanat"
    rest: list[tuple[str, str]] = []
    for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if key == "prefix":
            prefix = value
        else:
            rest.append((key, value))  # redis-py's own options (ssl_cert_reqs, ...)
    conn = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(rest)))
    try:
        return _redis_class()(conn, prefix=prefix)
    except ValueError as exc:
        raise StorageError(f"invalid Redis URL {redact(url)!r}: {exc}") from None


def __getattr__(name: str) -> Any:
    if name == "PostgresStorage":
        return _postgres_class()
    if name == "RedisStorage":
        return _redis_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def from_url(url: str, *, token: str | None = None) -> Storage:
    """The storage backend a URL names; ``StorageError`` for a URL qanat cannot use.

    ``token`` is the bearer token of an orchestration node (``http://``/``https://``;
    else ``$QANAT_TOKEN``); other backends ignore it."""
    if "://" not in url:
        if url.endswith(".db"):
            return SqliteStorage(url)
        raise StorageError(f"unsupported storage URL {url!r}: use {ACCEPTED}")
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        return MemoryStorage()
    if scheme == "sqlite":
        return _sqlite(url)
    if scheme in ("postgresql", "postgres"):
        return _postgres(url)
    if scheme in ("redis", "rediss"):
        return _redis(url)
    if scheme in ("http", "https"):
        from qanat.storage.http import HttpStorage  # httpx: only for node clients

        return HttpStorage(url, token)
    raise StorageError(f"unsupported storage URL {redact(url)!r}: use {ACCEPTED}")


__all__ = [
    "Checkpoint",
    "EventPage",
    "EventRecord",
    "ExecutionFilter",
    "ExecutionRecord",
    "Finish",
    "LogRecord",
    "MemoryStorage",
    "Page",
    "PostgresStorage",
    "RedisStorage",
    "SqliteStorage",
    "Stats",
    "StepRecord",
    "Storage",
    "TriggerFailure",
    "from_url",
]
