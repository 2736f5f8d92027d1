"""LISTEN/NOTIFY for PostgreSQL storage: a coalesced wake hint between processes.

The writer thread ``ring()``s after each commit that changed something; a notifier
thread turns the rings into ``NOTIFY qanat_<schema>`` on its own autocommit
connection, at most one every ``COALESCE`` seconds however many commits came
(NOTIFY takes a database-wide lock at commit, so one per row would throttle every
writer), and never on the write path. A listener thread holds one autocommit
connection in ``LISTEN`` and, for each notification, calls the ``listen()`` callbacks
on their event loops and counts it (``heard``, which ``PostgresStorage.changed``
compares). A dropped listening connection is re-established with back-off; while it
is down ``listening`` is False and storage falls back to polling, and after it is back
every callback is called once, since something may have been missed meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import psycopg

log = logging.getLogger("qanat")

#: At most one NOTIFY per this many seconds per process. Short: a job's finish follows
#: its claim by well under a millisecond, and a finish held back until the claim's
#: NOTIFY slot ended added that wait to every round trip through the queue (latency
#: p50 7.9 ms at 2 ms against 5.9 ms without; see benchmarks/RESULTS.md).
COALESCE = 0.0005
#: How long the listener blocks before looking at ``close`` (seconds).
LISTEN_TICK = 0.25
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0

_Callback = tuple[asyncio.AbstractEventLoop, Callable[[], None]]


class PgBell:
    """The NOTIFY sender and LISTEN receiver of one ``PostgresStorage``."""

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]], channel: str) -> None:
        self._connect = connect
        self.channel = channel
        self._rang = threading.Event()
        self._closing = threading.Event()
        self._callbacks: tuple[_Callback, ...] = ()
        #: notifications heard so far (and reconnections, which may have missed some)
        self.heard = 0
        #: whether the listening connection is up (else storage must poll)
        self.listening = False
        self._notifier = threading.Thread(target=self._notify_main, name="qanat-pg-notify")
        self._notifier.daemon = True
        self._notifier.start()
        self._listener: threading.Thread | None = None

    # --- sending ----------------------------------------------------------------------

    def ring(self) -> None:
        """After a commit that changed something (writer thread; never blocks or raises)."""
        self._rang.set()

    def _notify_main(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        backoff = BACKOFF_FIRST
        while True:
            self._rang.wait()
            if self._closing.is_set():
                break
            self._rang.clear()
            try:
                if conn is None:
                    conn = self._connect()
                conn.execute(f"NOTIFY {self.channel}")
                backoff = BACKOFF_FIRST
            except Exception as exc:  # psycopg's, or StorageError from connecting
                log.warning("qanat: PostgreSQL NOTIFY failed (%s); retrying", exc)
                with contextlib.suppress(Exception):
                    if conn is not None:
                        conn.close()
                conn = None
                self._rang.set()  # the wake-up is still owed
                self._closing.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            self._closing.wait(COALESCE)  # rings meanwhile share the next NOTIFY
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    # --- receiving --------------------------------------------------------------------

    def listen(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` on the running loop after notifications; returns its stop."""
        entry = (asyncio.get_running_loop(), callback)
        self._callbacks = (*self._callbacks, entry)
        if self._listener is None:
            self._listener = threading.Thread(target=self._listen_main, name="qanat-pg-listen")
            self._listener.daemon = True
            self._listener.start()

        def stop() -> None:
            self._callbacks = tuple(c for c in self._callbacks if c is not entry)

        return stop

    def _listen_main(self) -> None:
        backoff = BACKOFF_FIRST
        while not self._closing.is_set():
            conn: psycopg.Connection[Any] | None = None
            try:
                conn = self._connect()
                conn.execute(f"LISTEN {self.channel}")
                self.listening = True
                self._call()  # (re)connected: a notification may have been missed
                backoff = BACKOFF_FIRST
                while not self._closing.is_set():
                    for _ in conn.notifies(timeout=LISTEN_TICK):
                        self._call()
                    if conn.broken or conn.closed:  # notifies() can end quietly on a
                        raise psycopg.OperationalError("the server closed the connection")
            except Exception as exc:  # psycopg's, or StorageError from connecting
                if not self._closing.is_set():
                    log.warning(
                        "qanat: PostgreSQL LISTEN connection lost (%s); polling, "
                        "reconnecting in %.1fs",
                        str(exc).strip(),
                        backoff,
                    )
            finally:
                self.listening = False
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
            self._closing.wait(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    def _call(self) -> None:
        self.heard += 1
        for loop, callback in self._callbacks:
            with contextlib.suppress(RuntimeError):  # its loop has closed
                loop.call_soon_threadsafe(callback)

    def close(self) -> None:
        """Stop both threads (the writer, the only ringer, has stopped already)."""
        self._closing.set()
        self._rang.set()
        self._notifier.join()
        if self._listener is not None:
            self._listener.join()
