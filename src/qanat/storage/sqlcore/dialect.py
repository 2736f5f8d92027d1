"""The few places where the SQL backends differ: the dialect hooks.

Every statement of the shared core (``qanat.storage.sqlcore``) is written once, in the
SQL both SQLite and PostgreSQL accept where they agree, and in SQLite's spelling where
they do not (``?`` placeholders, ``json_each`` for id lists, ``INDEXED BY`` hints). A
:class:`Dialect` turns that text into its own (once per statement: the result is
cached by the connection) and adds what concurrent writers need and SQLite's single
writer let the core leave out:

* ``lock(sql)``: a read that a write of the same transaction depends on (the owner
  check before a checkpoint, the rows a cancel ends) locks what it read;
* ``skip_locked(sql)``: the claim's candidate rows are locked, and rows another claimer
  holds are passed over;
* ``claim_take``: the claim's update re-checks that the rows are still claimable;
* ``lock_flow(conn, keys)``: the flow-control state of a gate (its row, marks, running
  count, parked executions) or step slot is read and written under that key's lock,
  held to the end of the transaction (``try_lock_flow`` for the claim, which passes
  over gated work whose gates another transaction holds);
* ``now(conn)``: the storage's clock for times an operation writes (lease ends, due
  times): this host's on SQLite, the server's on PostgreSQL (read once per transaction).

For SQLite every hook is the identity: ``BEGIN IMMEDIATE`` already serialises writers.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Iterable
from typing import Any, Protocol


class Conn(Protocol):
    """What the shared operations use of a connection (``sqlite3.Connection`` or the
    PostgreSQL adapter): statements in the core's text, translated by ``dialect``."""

    dialect: Dialect
    #: set by an operation whose effect is found only as it runs and wakes someone in
    #: this process (a parent, a parked execution, a waiter): its commit is not quiet
    #: (``ConnThread.quiet``); the writer clears it before each transaction
    loud: bool

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...

    def executemany(self, sql: str, parameters: Any, /) -> Any: ...


class Dialect:
    """SQLite: the core's text as it is, and no extra locks."""

    name = "sqlite"
    #: starts a writer's transaction
    begin = "BEGIN IMMEDIATE"
    #: the claim's update of the rows it chose (the dialect may add a re-check)
    claim_take_check = ""
    #: whether data-modifying WITH clauses exist (one-statement checkpoints)
    writable_cte = False

    def translate(self, sql: str) -> str:
        return sql

    def lock(self, sql: str) -> str:
        """A read whose rows the same transaction then writes."""
        return sql

    def skip_locked(self, sql: str) -> str:
        """The claim's choice of candidates."""
        return sql

    def lock_flow(self, conn: Conn, keys: Iterable[str]) -> None:
        """Serialise the flow-control decisions on these gates (or step slots) from here
        to the end of the transaction (taken in sorted order)."""

    def try_lock_flow(self, conn: Conn, keys: Iterable[str]) -> bool:
        """``lock_flow`` without waiting: False if another transaction holds one of them.
        A claim asks this way because it already holds row locks on its candidates:
        waiting for a gate there could deadlock with its holder parking those rows."""
        return True

    def now(self, conn: Conn) -> float:
        """The storage's now for what this transaction writes (one host: its clock)."""
        return time.time()

    def known_now(self, conn: Conn) -> float | None:
        """``now`` if it costs nothing (read already in this transaction), else None:
        a statement may then read the clock itself (and ``adopt_now`` the value)."""
        return time.time()

    def adopt_now(self, conn: Conn, server_now: float) -> None:
        """A statement of this transaction read the storage's clock as well: ``now``
        returns that from here on (no read of its own)."""


class PostgresDialect(Dialect):
    """PostgreSQL: numbered ``$n`` placeholders, jsonb for id lists, row locks."""

    name = "postgresql"
    begin = "BEGIN"
    writable_cte = True
    #: the candidates are locked by this transaction (SKIP LOCKED), so only its own
    #: earlier statements can have changed them: a bulk park of a full gate may have
    #: parked rows this claim took first, which stay taken (as on SQLite)
    claim_take_check = " AND status IN ('pending', 'running', 'waiting')"
    #: transaction-level advisory locks, one per gate key (a 64-bit hash of it: keys
    #: that collide only share a lock), taken in sorted order by one statement
    FLOW_LOCK = (
        "SELECT count(pg_advisory_xact_lock(hashtextextended(k, 7136290371))) "
        "FROM (SELECT unnest(CAST($1 AS text[])) AS k ORDER BY 1) AS keys"
    )
    TRY_FLOW_LOCK = (
        "SELECT k, pg_try_advisory_xact_lock(hashtextextended(k, 7136290371)) "
        "FROM (SELECT unnest(CAST($1 AS text[])) AS k ORDER BY 1) AS keys"
    )

    #: statements whose SQLite text has no mechanical translation
    overrides: dict[str, str] = {}

    _IDS = re.compile(r"\(SELECT value FROM json_each\((\?\d*)\)\)")
    _EACH = re.compile(r"json_each\((\?\d*)\)")
    _HINT = re.compile(r" INDEXED BY \w+")
    _PARAM = re.compile(r"\?(\d*)")

    def translate(self, sql: str) -> str:
        text = self.overrides.get(sql, sql)
        text = self._IDS.sub(r"(SELECT jsonb_array_elements_text(CAST(\1 AS jsonb)))", text)
        text = self._EACH.sub(r"jsonb_array_elements(CAST(\1 AS jsonb)) AS je(value)", text)
        text = self._HINT.sub("", text)
        text = text.replace(" AS REAL)", " AS double precision)")
        text = text.replace("LIMIT -1 OFFSET", "LIMIT ALL OFFSET")
        text = re.sub(r"\browid\b", "seq", text)
        text = re.sub(r"\btotal\(", "sum(", text)
        if text == "BEGIN IMMEDIATE":
            return "BEGIN"
        # SQLite's rule: ``?N`` is parameter N, a bare ``?`` the one after the largest so far
        last = 0

        def number(m: re.Match[str]) -> str:
            nonlocal last
            n = int(m.group(1)) if m.group(1) else last + 1
            last = max(last, n)
            return f"${n}"

        return self._PARAM.sub(number, text)

    @functools.cache  # noqa: B019 - two dialect objects live as long as the process
    def lock(self, sql: str) -> str:
        return sql + " FOR UPDATE"

    @functools.cache  # noqa: B019
    def skip_locked(self, sql: str) -> str:
        return sql + " FOR UPDATE SKIP LOCKED"

    def lock_flow(self, conn: Conn, keys: Iterable[str]) -> None:
        lock_flow = getattr(conn, "lock_flow", None)
        if lock_flow is not None:
            lock_flow(keys)

    def try_lock_flow(self, conn: Conn, keys: Iterable[str]) -> bool:
        try_lock = getattr(conn, "try_lock_flow", None)
        return True if try_lock is None else bool(try_lock(keys))

    def now(self, conn: Conn) -> float:
        server_now = getattr(conn, "server_now", None)
        return time.time() if server_now is None else float(server_now())

    def known_now(self, conn: Conn) -> float | None:
        known = getattr(conn, "known_now", None)
        return None if known is None else known()

    def adopt_now(self, conn: Conn, server_now: float) -> None:
        adopt = getattr(conn, "adopt_now", None)
        if adopt is not None:
            adopt(float(server_now))


SQLITE = Dialect()
POSTGRES = PostgresDialect()
