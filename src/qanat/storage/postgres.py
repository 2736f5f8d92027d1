"""PostgreSQL storage (``postgresql://user:pw@host:5432/db?schema=qanat``): one database
shared by workers on any number of hosts.

The operations are the shared SQL core's (``qanat.storage.sqlcore``), run exactly as on
SQLite: a writer thread owns one synchronous psycopg connection and runs everything
queued in one transaction (group commit; ``synchronous_commit`` stays on), a reader
thread owns a second one. The core's statements are translated once each by
:class:`~qanat.storage.sqlcore.dialect.PostgresDialect` (``$n`` placeholders, jsonb id
lists) and prepared by psycopg after a few uses. What SQLite's single writer let the
core assume is added by the dialect hooks: claims choose rows ``FOR UPDATE SKIP
LOCKED`` and re-check them, owner checks lock the row they read, and every flow-control
decision runs under one transaction-level advisory lock (see docs/architecture.md).
A batch that loses a deadlock is rolled back and run again.

The tables live in their own schema (``?schema=``, default ``qanat``), created and
migrated at open from ``sql/postgres_NNN_*.sql`` under ``pg_advisory_xact_lock``, so
workers starting at once migrate it once. A schema written by a newer qanat, a schema
holding tables that are not qanat's, an unreachable server and a refused login are
refused at open with a sentence naming the problem (the password redacted).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

import psycopg
import psycopg.errors
from psycopg import pq

from qanat.errors import StorageError
from qanat.storage.offset import ClockOffset
from qanat.storage.pg_notify import PgBell
from qanat.storage.sqlcore.backend import BULK, ONE_STATEMENT, READ_BULK, SqlStorage
from qanat.storage.sqlcore.dialect import POSTGRES, Dialect
from qanat.storage.sqlcore.schema import numbered_scripts
from qanat.storage.sqlcore.writer import ConnThread
from qanat.storage.urls import redact

APPLICATION = "qanat"
DEFAULT_SCHEMA = "qanat"
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
#: Without LISTEN: how often ``changed()`` says "maybe" (seconds).
POLL_ONLY = 0.05
#: A statement that changes rows: INSERT / UPDATE / DELETE, or a WITH holding one.
WRITES = re.compile(r"\s*(INSERT|UPDATE|DELETE)\b|\s*WITH\b.*\b(INSERT|UPDATE|DELETE)\b", re.S)
#: key of the advisory lock that serialises migrations of one schema
MIGRATE_LOCK = "SELECT pg_advisory_xact_lock(hashtext('qanat.migrate.' || $1))"


def migrations() -> tuple[tuple[int, str], ...]:
    """The numbered schema scripts ``sql/postgres_NNN_name.sql``, in order."""
    return numbered_scripts("postgres")


def schema_version() -> int:
    """The newest PostgreSQL schema this code knows."""
    return len(migrations())


class PgConnection:
    """A psycopg connection speaking the core's SQL: statements are translated once
    each (cached here), and the writer's transaction control passes through."""

    dialect: Dialect = POSTGRES
    loud = False

    def __init__(self, raw: psycopg.Connection[Any], clock: ServerClock | None = None) -> None:
        self.raw = raw
        self._sql: dict[str, str] = {}
        #: the statements that change rows (their row count moves ``total_changes``)
        self._writes: set[str] = set()
        #: rows changed so far (the writer rings its bell when this moved)
        self.total_changes = 0
        #: gate keys whose advisory lock this transaction holds
        self._flow_locked: set[str] = set()
        self.clock = clock if clock is not None else ServerClock()
        #: the server's clock as read in the current transaction (None: not read yet)
        self._now: float | None = None

    def _text(self, sql: str) -> str:
        text = self._sql.get(sql)
        if text is None:
            text = self._sql[sql] = self.dialect.translate(sql)
            if WRITES.match(text):
                self._writes.add(sql)
        return text

    def execute(self, sql: str, parameters: Any = None, /) -> Any:
        if sql == "BEGIN" or sql.startswith("ROLLBACK"):
            self._flow_locked.clear()  # advisory locks end with their (sub)transaction
            self._now = None
        cur = self.raw.execute(self._text(sql), parameters or None)
        # (a data-modifying WITH reports the rows of its final SELECT: count those too)
        if cur.rowcount > 0 and sql in self._writes:
            self.total_changes += cur.rowcount
        return cur

    def executemany(self, sql: str, parameters: Any, /) -> Any:
        cur = self.raw.cursor()
        cur.executemany(self._text(sql), list(parameters))
        self.total_changes += 1
        return cur

    def lock_flow(self, keys: Iterable[str]) -> None:
        """Take these gates' locks, each once per transaction (``Dialect.lock_flow``)."""
        new = sorted(set(keys) - self._flow_locked)
        if new:
            self.raw.execute(POSTGRES.FLOW_LOCK, (new,))
            self._flow_locked.update(new)

    def try_lock_flow(self, keys: Iterable[str]) -> bool:
        """These gates' locks if they are all free now (``Dialect.try_lock_flow``); the
        ones it got are kept to the end of the transaction either way."""
        new = sorted(set(keys) - self._flow_locked)
        if not new:
            return True
        rows = self.raw.execute(POSTGRES.TRY_FLOW_LOCK, (new,)).fetchall()
        got = {k for k, ok in rows if ok}
        self._flow_locked.update(got)
        return len(got) == len(new)

    def server_now(self) -> float:
        """The server's clock (``Dialect.now``): read once per transaction, so every time
        one transaction writes is the same instant; each read updates the offset."""
        if self._now is not None and self.in_transaction:
            return self._now
        self._now = self.clock.read(self.raw)
        return self._now

    def known_now(self) -> float | None:
        """The server's clock if this transaction read it already, else None."""
        return self._now if self._now is not None and self.in_transaction else None

    def adopt_now(self, server: float) -> None:
        """The server's clock as read by a statement of this transaction (the claim's
        first): ``server_now`` returns it for the rest of the transaction."""
        if self.in_transaction:
            self._now = server

    @property
    def broken(self) -> bool:
        """Whether the connection is lost (the writer thread then opens a new one)."""
        return bool(self.raw.closed or self.raw.broken)

    @property
    def in_transaction(self) -> bool:
        return self.raw.pgconn.transaction_status != pq.TransactionStatus.IDLE

    def close(self) -> None:
        self.raw.close()


class ServerClock:
    """The server's clock and this host's offset to it (``Storage.clock``).

    Every read of the server's clock (once per write transaction that needs it: claim,
    renew, finish, release, ...; and ``Storage.now``) measures the offset against the
    middle of the round trip (the shortest trip's, ``storage/offset.py``); local timers
    add it to ``time.time()``. Its error is half a round trip at most: fine for a timer,
    not for a time other hosts compare (the rule in ``Storage``). Shared by the writer
    and reader connections of one storage."""

    SQL = "SELECT extract(epoch from clock_timestamp())::double precision"

    def __init__(self) -> None:
        self.estimate = ClockOffset()

    @property
    def offset(self) -> float:
        return self.estimate.offset

    def read(self, raw: psycopg.Connection[Any]) -> float:
        before = time.time()
        row = raw.execute(self.SQL).fetchone()
        after = time.time()
        server = float(row[0]) if row is not None else after
        self.estimate.observe(server, before, after)
        return server


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure))


class PostgresStorage(SqlStorage):
    """Executions, steps and logs in one schema of a PostgreSQL database."""

    polls = True

    def __init__(
        self,
        url: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        notify: bool = True,
        connect_timeout: float = 10.0,
    ) -> None:
        if not SCHEMA_NAME.fullmatch(schema):
            raise ValueError(
                f"schema={schema!r} is not a plain lower-case PostgreSQL name "
                "(letters, digits and _, not starting with a digit)"
            )
        self.url = url
        self.schema = schema
        self.notify = bool(notify)
        self.connect_timeout = float(connect_timeout)
        self._writer: ConnThread | None = None
        self._reader: ConnThread | None = None
        self._bell: PgBell | None = None
        self._heard = -1
        self._polled = 0.0
        self._clock = ServerClock()

    def __repr__(self) -> str:
        return f"PostgresStorage({redact(self.url)!r}, schema={self.schema!r})"

    def _closed(self) -> StorageError:
        return StorageError(f"PostgreSQL storage {redact(self.url)} is not open")

    # --- lifecycle ---------------------------------------------------------------------

    def _connect(self) -> PgConnection:
        return PgConnection(self._connect_raw(), self._clock)

    def _connect_raw(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(
                self.url,
                autocommit=True,
                cursor_factory=psycopg.RawCursor,
                connect_timeout=max(1, round(self.connect_timeout)),
                options=f"-c search_path={self.schema}",
                application_name="qanat",
            )
        except psycopg.Error as exc:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            if "password authentication failed" in str(exc):
                reason = "the server refused the user name or password"
            raise StorageError(
                f"cannot connect to PostgreSQL at {redact(self.url)}: {reason}"
            ) from None

    def _migrate(self, conn: PgConnection) -> None:
        raw = conn.raw
        with raw.transaction():
            raw.execute(MIGRATE_LOCK, (self.schema,))
            version = self._check_schema(raw)
            raw.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            for number, script in migrations():
                if number <= version:
                    continue
                # a client-side cursor runs a script of several statements
                psycopg.ClientCursor(raw).execute(script)
                raw.execute(
                    "INSERT INTO qanat_meta (key, value) VALUES ('schema_version', $1) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (str(number),),
                )

    def _check_schema(self, raw: psycopg.Connection[Any]) -> int:
        """The schema version found (0: no schema, or an empty one); refuse others."""
        where = f"schema {self.schema!r} of {redact(self.url)}"
        tables = {
            r[0]
            for r in raw.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
                (self.schema,),
            ).fetchall()
        }
        if not tables:
            return 0
        if "qanat_meta" not in tables:
            raise StorageError(
                f"{where} holds tables that are not qanat's ({', '.join(sorted(tables)[:5])}); "
                "qanat refuses to touch it. Use ?schema=<another name> for qanat's tables."
            )
        meta = dict(raw.execute("SELECT key, value FROM qanat_meta").fetchall())
        if meta.get("application") != APPLICATION:
            raise StorageError(f"{where} has a qanat_meta table without qanat's marker")
        try:
            version = int(meta.get("schema_version", "0"))
        except ValueError:
            raise StorageError(f"{where}: its schema_version is not a number") from None
        if version > schema_version():
            raise StorageError(
                f"{where} was written by a newer qanat (schema {version}); this version "
                f"understands up to {schema_version()}. Upgrade qanat to use this database."
            )
        return version

    def _open_sync(self) -> tuple[PgConnection, PgConnection]:
        writer = self._connect()
        try:
            self._migrate(writer)
            reader = self._connect()
            reader.server_now()  # the offset for ``clock()`` before the first claim
        except BaseException as exc:
            writer.close()
            if isinstance(exc, psycopg.Error):
                raise StorageError(f"cannot open {self!r}: {exc}") from exc
            raise
        return writer, reader

    async def open(self) -> None:
        if self._writer is not None:
            return
        writer, reader = await asyncio.to_thread(self._open_sync)
        label = f"PostgreSQL storage {redact(self.url)}"
        errors = (psycopg.Error,)
        self._writer = ConnThread(
            writer,
            "qanat-pg-writer",
            label,
            True,
            errors,
            BULK,
            retryable=_retryable,
            reopen=self._connect,
            single=ONE_STATEMENT,
        )
        self._reader = ConnThread(
            reader, "qanat-pg-reader", label, False, errors, READ_BULK, reopen=self._connect
        )
        if self.notify:
            self._bell = self._writer.bell = PgBell(self._connect_raw, f"qanat_{self.schema}")

    async def close(self) -> None:
        writer, reader = self._writer, self._reader
        self._writer = self._reader = None
        if reader is not None:
            await reader.stop()
            reader.thread.join()
        if writer is not None:
            await writer.stop()  # commits what was queued before it
            writer.thread.join()
        bell, self._bell = self._bell, None
        if bell is not None:
            await asyncio.to_thread(bell.close)

    def clock(self) -> float:
        return time.time() + self._clock.offset

    async def now(self) -> float:
        if self._reader is None:
            raise self._closed()
        at: float = await self._reader.submit(_server_now, ())
        return at

    def listen(self, callback: Callable[[], None]) -> Callable[[], None] | None:
        return None if self._bell is None else self._bell.listen(callback)

    async def changed(self) -> bool:
        bell = self._bell
        if bell is None or not bell.listening:
            # poll-only (notify=False, or the listening connection is down): report a
            # change every POLL_ONLY seconds rather than at every tick of the caller
            t = time.monotonic()
            if t - self._polled < POLL_ONLY:
                return False
            self._polled = t
            return True
        heard = bell.heard
        seen, self._heard = self._heard, heard
        return heard != seen

    async def __aenter__(self) -> PostgresStorage:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _server_now(conn: PgConnection) -> float:
    return conn.server_now()


__all__ = ["PostgresStorage", "migrations", "redact", "schema_version"]
