"""Storage backends and the contract they share.

``from_url`` turns a storage URL into a backend: ``memory://``, ``sqlite:///relative.db``,
``sqlite:////absolute/path.db`` (``?synchronous=normal``, ``?busy_timeout=5``), or a bare
path ending in ``.db``.
"""

from __future__ import annotations

import urllib.parse

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

ACCEPTED = (
    "memory://, sqlite:///relative/path.db, sqlite:////absolute/path.db, or a path ending in .db"
)
PLANNED = {
    "postgresql": "PostgreSQL",
    "postgres": "PostgreSQL",
    "redis": "Redis",
    "rediss": "Redis",
    "http": "HTTP orchestration node",
    "https": "HTTP orchestration node",
}


def _redact(url: str) -> str:
    """The URL without its password, for error messages."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return url


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


def from_url(url: str) -> Storage:
    """The storage backend a URL names; ``StorageError`` for a URL qanat cannot use."""
    if "://" not in url:
        if url.endswith(".db"):
            return SqliteStorage(url)
        raise StorageError(f"unsupported storage URL {url!r}: use {ACCEPTED}")
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        return MemoryStorage()
    if scheme == "sqlite":
        return _sqlite(url)
    base = scheme.split("+", 1)[0]
    if base in PLANNED:
        raise StorageError(
            f"the {PLANNED[base]} backend ({scheme}://) is not available yet in this version "
            f"of qanat; use {ACCEPTED}"
        )
    raise StorageError(f"unsupported storage URL {_redact(url)!r}: use {ACCEPTED}")


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
    "SqliteStorage",
    "Stats",
    "StepRecord",
    "Storage",
    "TriggerFailure",
    "from_url",
]
