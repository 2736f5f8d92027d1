"""SQLite storage (``sqlite:///path.db``): embedded, durable, shared by processes on one host.

The operations are the shared SQL core's (``qanat.storage.sqlcore``); this module opens
the file, owns its schema and watches it. Three connections, each used by one thread:

* the **writer** runs on its own thread (``sqlcore/writer.py``): everything queued runs
  in one ``BEGIN IMMEDIATE … COMMIT`` (group commit), each operation in its own
  SAVEPOINT. Futures are resolved only after the COMMIT returned.
* the **reader** runs queries on a second thread (WAL readers don't block the writer).
* the **watcher** connection runs ``PRAGMA data_version`` on the event-loop thread for
  ``changed()``: a few microseconds. After each commit that changed something the
  writer rings the doorbell (``storage/doorbell.py``), which wakes ``listen()``
  callbacks here and in every other process on the file at once; polling
  ``changed()`` is then only the fallback.

The semantics of every method are those of :class:`qanat.storage.memory.MemoryStorage`;
the contract tests in ``tests/contract`` run the same suite against every backend.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

from qanat.errors import StorageError
from qanat.storage.doorbell import LOCAL_DELAY, Doorbell
from qanat.storage.sqlcore.backend import (
    BULK,
    INLINE_READS,
    QUIET,
    QUIET_FOR_OTHERS,
    READ_BULK,
    SqlStorage,
)
from qanat.storage.sqlcore.dialect import SQLITE, Dialect
from qanat.storage.sqlcore.schema import numbered_scripts
from qanat.storage.sqlcore.writer import ConnThread

SQLITE_HEADER = b"SQLite format 3\x00"
APPLICATION = "qanat"
SYNCHRONOUS = ("full", "normal", "extra")
#: The page size of a database qanat creates (one it opens keeps its own). Every commit
#: writes each page it changed to the WAL whole and syncs it: an enqueue changes five
#: (the row, its id and two index entries, its input's row), a checkpoint three or four,
#: each a few dozen bytes of a page. With 1 KiB pages a lone enqueue's commit is 20 KiB
#: less to write and sync than with SQLite's 4 KiB default: 80.7 -> 59.6 µs on this
#: machine (benchmarks/RESULTS.md), at the price of longer overflow chains for large
#: payloads (a 50 MB input is stored in 0.21 s instead of 0.15 s). Durability is the
#: same: WAL frames are checksummed, and every commit is still synced.
PAGE_SIZE = 1024


class SqliteConnection(sqlite3.Connection):
    """A connection that names its dialect for the shared operations."""

    dialect: Dialect = SQLITE
    loud = False


# --- schema and migrations -----------------------------------------------------------


def migrations() -> tuple[tuple[int, str], ...]:
    """The numbered schema scripts ``sql/sqlite_NNN_name.sql``, in order."""
    return numbered_scripts("sqlite")


def schema_version() -> int:
    """The newest schema this code knows."""
    return len(migrations())


def _statements(script: str) -> Iterator[str]:
    """Split a script into statements (``executescript`` would commit our transaction)."""
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            yield buf.strip()
            buf = ""


def _not_qanat(path: str, why: str) -> StorageError:
    return StorageError(
        f"{path} is not a qanat database ({why}); qanat refuses to touch it. "
        "Point the queue at a new file or at an existing qanat database."
    )


def _unreadable(path: str, exc: sqlite3.DatabaseError) -> StorageError:
    """An SQLite file (its header is right) that SQLite cannot read: damaged, typically a
    truncated copy; say so, and how to get back what can be (docs/storage.md)."""
    if getattr(exc, "sqlite_errorname", "") not in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
        return _not_qanat(path, f"SQLite cannot read it: {exc}")
    return StorageError(
        f"{path} is a damaged SQLite file (SQLite: {exc}), for example a truncated or "
        "partial copy; qanat refuses to touch it. Restore it from a backup, or copy what "
        f'SQLite can still read into a new file: sqlite3 {path} ".recover" | sqlite3 '
        'recovered.db, and point the queue at recovered.db (docs/storage.md, "Backups '
        'and damaged files", also shows the .dump way for sqlite3 versions whose '
        ".recover fails)."
    )


def _newer(path: str, version: int) -> StorageError:
    return StorageError(
        f"{path} was written by a newer qanat (schema {version}); this version understands "
        f"up to {schema_version()}. Upgrade qanat to use this database."
    )


def _check_meta(path: str, conn: sqlite3.Connection) -> int:
    """The schema version of an existing database, or 0 if it is empty; refuse others."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        return 0
    if "qanat_meta" not in tables:
        raise _not_qanat(path, "it is an SQLite database without the qanat_meta marker")
    meta = dict(conn.execute("SELECT key, value FROM qanat_meta").fetchall())
    if meta.get("application") != APPLICATION:
        raise _not_qanat(path, "its qanat_meta table has no qanat application marker")
    try:
        version = int(meta.get("schema_version", "0"))
    except ValueError:
        raise _not_qanat(path, "its schema_version is not a number") from None
    if version > schema_version():
        raise _newer(path, version)
    return version


def _inspect(path: str, timeout: float) -> None:
    """Refuse a file that is not ours, reading it only: nothing is written before this."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise StorageError(
                f"cannot create qanat database {path}: folder {folder} does not exist"
            ) from None
        return
    except OSError as exc:
        raise StorageError(f"cannot open qanat database {path}: {exc}") from exc
    if stat.S_ISDIR(st.st_mode):
        raise _not_qanat(path, "it is a directory")
    if st.st_size == 0:
        return
    try:
        with open(path, "rb") as f:
            header = f.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise StorageError(f"cannot read qanat database {path}: {exc}") from exc
    if header != SQLITE_HEADER:
        raise _not_qanat(path, "it is not an SQLite file")
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=timeout, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open qanat database {path}: {exc}") from exc
    try:
        _check_meta(path, conn)
    except sqlite3.DatabaseError as exc:
        raise _unreadable(path, exc) from exc
    finally:
        conn.close()


def _wal(conn: sqlite3.Connection, timeout: float) -> str:
    """Switch to WAL. Processes opening a new file at once can find it locked here, where
    SQLite does not wait out ``busy_timeout``: retry until that time has passed."""
    end = time.monotonic() + timeout
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > end:
                raise
            time.sleep(0.005)


def _migrate(path: str, conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _check_meta(path, conn)  # again, under the write lock
        for number, script in migrations():
            if number <= version:
                continue
            for sql in _statements(script):
                conn.execute(sql)
            conn.execute(
                "INSERT OR REPLACE INTO qanat_meta (key, value) VALUES ('schema_version', ?)",
                (str(number),),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


# --- the backend ---------------------------------------------------------------------------


class SqliteStorage(SqlStorage):
    """Executions, steps and logs in one SQLite file (WAL mode, group commit)."""

    polls = True

    def __init__(
        self, path: str | os.PathLike[str], *, synchronous: str = "full", busy_timeout: float = 30.0
    ) -> None:
        self.path = os.fspath(path)
        sync = synchronous.lower()
        if sync not in SYNCHRONOUS:
            raise ValueError(f"synchronous={synchronous!r} is not one of {', '.join(SYNCHRONOUS)}")
        self.synchronous = sync
        self.busy_timeout = float(busy_timeout)
        self._writer: ConnThread | None = None
        self._reader: ConnThread | None = None
        self._watch: sqlite3.Connection | None = None
        self._watch_cur: sqlite3.Cursor | None = None
        self._seen: int | None = None
        self._bell: Doorbell | None = None
        self._local_wake_delay = LOCAL_DELAY
        self._serves_others = False

    def __repr__(self) -> str:
        return f"SqliteStorage({self.path!r}, synchronous={self.synchronous!r})"

    # --- lifecycle ---------------------------------------------------------------------

    def _closed(self) -> StorageError:
        return StorageError(f"SQLite storage {self.path} is not open")

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=256,
            factory=SqliteConnection,
        )
        try:
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _busy_timeout(self, conn: sqlite3.Connection, zero: bool) -> None:
        """Zero for a commit or read on the event-loop thread (it must not wait for
        another process's lock), the configured one for the writer and reader threads."""
        ms = 0 if zero else int(self.busy_timeout * 1000)
        conn.execute(f"PRAGMA busy_timeout = {ms}")

    def _open_sync(self) -> list[sqlite3.Connection]:
        _inspect(self.path, self.busy_timeout)
        conns: list[sqlite3.Connection] = []
        try:
            conns.append(self._connect())
            writer = conns[0]
            writer.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # a new file's; else no-op
            mode = _wal(writer, self.busy_timeout)
            if str(mode).lower() != "wal":
                raise StorageError(f"cannot put SQLite database {self.path} in WAL mode ({mode})")
            _migrate(self.path, writer)
            conns.append(self._connect())
            conns.append(self._connect())
        except BaseException as exc:
            for c in conns:
                c.close()
            if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
                raise _unreadable(self.path, exc) from exc
            if isinstance(exc, sqlite3.Error):
                raise StorageError(f"cannot open qanat database {self.path}: {exc}") from exc
            raise
        return conns

    async def open(self) -> None:
        if self._writer is not None:
            return
        writer, reader, watch = await asyncio.to_thread(self._open_sync)
        label = f"SQLite storage {self.path}"
        self._writer = ConnThread(
            writer,
            "qanat-sqlite-writer",
            label,
            True,
            (sqlite3.Error,),
            BULK,
            inline=self._busy_timeout,
            quiet=self._quiet(),
        )
        self._reader = ConnThread(
            reader,
            "qanat-sqlite-reader",
            label,
            False,
            (sqlite3.Error,),
            READ_BULK,
            inline=self._busy_timeout,
            inline_reads=INLINE_READS,
        )
        self._watch = watch
        self._watch_cur = watch.cursor()
        self._seen = None
        if self.path not in ("", ":memory:"):
            self._bell = self._writer.bell = Doorbell(self.path)
            self._bell.local_delay = self._local_wake_delay

    async def close(self) -> None:
        writer, reader, watch = self._writer, self._reader, self._watch
        self._writer = self._reader = None
        self._watch = self._watch_cur = None
        if reader is not None:
            await reader.stop()
            reader.thread.join()
        if watch is not None:
            watch.close()
        if writer is not None:
            await writer.stop()  # commits what was queued before it
            writer.thread.join()
        bell, self._bell = self._bell, None
        if bell is not None:
            bell.close()  # the writer thread, its only ringer, has ended

    async def __aenter__(self) -> SqliteStorage:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def listen(self, callback: Callable[[], None]) -> Callable[[], None] | None:
        return None if self._bell is None else self._bell.listen(callback)

    @property
    def local_wake_delay(self) -> float:
        return self._local_wake_delay

    @local_wake_delay.setter
    def local_wake_delay(self, delay: float) -> None:
        self._local_wake_delay = delay
        if self._bell is not None:
            self._bell.local_delay = delay

    @property
    def serves_others(self) -> bool:
        return self._serves_others

    @serves_others.setter
    def serves_others(self, serves: bool) -> None:
        self._serves_others = serves
        if self._writer is not None:
            self._writer.quiet = self._quiet()

    def _quiet(self) -> dict[Callable[..., Any], Callable[..., bool]]:
        return QUIET_FOR_OTHERS if self._serves_others else QUIET

    async def changed(self) -> bool:
        cur = self._watch_cur
        if cur is None:
            return True
        version: int = cur.execute("PRAGMA data_version").fetchone()[0]
        seen, self._seen = self._seen, version
        return seen != version


__all__ = ["SqliteStorage", "migrations", "schema_version"]
