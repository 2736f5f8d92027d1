"""Storage backends (placeholder until the SQLite backend lands)."""

from qanat.errors import StorageError
from qanat.storage.base import Storage
from qanat.storage.memory import MemoryStorage


def from_url(url: str) -> Storage:
    if url.startswith("memory://"):
        return MemoryStorage()
    try:
        from qanat.storage.sqlite import SqliteStorage  # type: ignore[import-not-found]
    except ImportError:
        raise StorageError("sqlite not ready") from None
    return SqliteStorage(url.removeprefix("sqlite:///"))  # type: ignore[no-any-return]


__all__ = ["MemoryStorage", "Storage", "from_url"]
