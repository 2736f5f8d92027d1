"""The threads of an SQL backend: one connection each, owned by one thread that runs
queued operations in batches (the group commit).

Callers queue an operation (a function of the connection, see ``executions.py`` and
its siblings) and await a future. The **writer** takes everything queued and runs it in
one transaction, each operation in its own SAVEPOINT so one that raises is rolled back
alone; a run of same-kind operations that has a one-statement form (``bulk``) runs as
that statement. Futures are resolved only after the COMMIT returned: a write is
acknowledged once it is durable, never before. A **reader** runs queries the same way
(runs of same-kind reads with a bulk form as one read) without a transaction of its
own. A batch that loses a deadlock or a serialization
failure (``retryable``: PostgreSQL only) is rolled back whole and run again.

**Inline commits** (SQLite: ``inline`` given). A write submitted when the writer has
nothing queued or in hand and the event loop has (almost) nothing else ready to run
(``INLINE_READY``) is run by the caller, on the event-loop thread, in a transaction of
its own: the same BEGIN, operation, COMMIT the writer thread would run, without the
two thread hand-offs (~50 µs of a ~250 µs lone commit). One connection, one writer at
a time: the writer thread and an inline caller hold ``busy`` while they use the
connection, and an inline caller takes it only without waiting. The loop having
(almost) nothing ready means (almost) nobody could have joined the operation's group
commit anyway, so batching is not lost where there is concurrency (a loop with more
ready callbacks queues to the writer as before). The caller waits for no other
process: its BEGIN runs with a zero busy timeout and, if another process holds the
write lock, the operation goes to the writer thread (which waits that out off the
loop). Acknowledged, as ever, only after its COMMIT returned.

**Inline reads** (SQLite: ``inline_reads`` given). A small read (one of
``inline_reads``, for the arguments it accepts: ``has_ready``, ``get``, a
``get_many`` of a few ids) submitted while the reader has nothing queued or in hand
runs on the caller's thread: a few tens of microseconds of SQLite, against ~165 µs for
the two thread hand-offs on this machine. Also with a zero busy timeout; anything that
fails inline is run again by the reader thread, which reports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from qanat.errors import StorageError

T = TypeVar("T")
log = logging.getLogger("qanat")

#: At most this many operations share one transaction (bounds a batch's latency).
MAX_BATCH = 1024
#: Times a batch is run again after losing a deadlock before its error is reported.
RETRIES = 5

#: A write is committed inline while at most this many other callbacks are ready to run
#: on the loop: typically the wake-up of the task whose result the last commit delivered
#: (the caller of ``result()``, a finished runner), which would not have joined the
#: commit anyway. With many ready (concurrent executions) it goes to the writer thread
#: and shares a group commit. 0 -> 1: sequential ten-step executions 1,639 -> 1,479 µs
#: each (the enqueue after a result no longer takes the ~250 µs of two thread hops).
INLINE_READY = 1
_UNKNOWN = range(INLINE_READY + 1)  # a loop without ``_ready``: never inline

#: A one-statement form of a run of same-kind operations: their results, or None to run
#: them one by one.
Bulk = Callable[[Any, list[Any]], "list[Any] | None"]
#: Whether an operation, for these arguments, writes with a single statement.
OneStatement = Callable[..., bool]
#: Whether an operation may run on the caller's thread for these arguments.
Accepts = Callable[..., bool]
#: Whether an operation, for these arguments, changes nothing this process's own
#: listeners wait for (a step checkpoint without children): a commit made only of such
#: operations rings the other processes' doorbells but does not wake our own loops. An
#: operation that learns only as it runs that it does wake someone (a finish that wakes
#: a parent) sets ``Conn.loud``.
Quiet = Callable[..., bool]

_Op = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any] | None"]
_Result = tuple["asyncio.Future[Any]", bool, Any]


def _deliver(results: list[_Result]) -> None:
    for fut, ok, value in results:
        if not fut.done():
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)


class ConnThread:
    """One connection owned by one thread that runs queued operations in batches."""

    def __init__(
        self,
        conn: Any,
        name: str,
        label: str,
        write: bool,
        errors: tuple[type[BaseException], ...],
        bulk: dict[Callable[..., Any], Bulk] | None = None,
        retryable: Callable[[BaseException], bool] | None = None,
        reopen: Callable[[], Any] | None = None,
        single: dict[Callable[..., Any], OneStatement] | None = None,
        inline: Callable[[Any, bool], None] | None = None,
        quiet: dict[Callable[..., Any], Quiet] | None = None,
        inline_reads: dict[Callable[..., Any], Accepts] | None = None,
    ) -> None:
        self.conn = conn
        self.label = label
        self.write = write
        self.errors = errors
        self.bulk = bulk or {}
        self.retryable = retryable
        #: makes a new connection when this one broke (the server restarted, a network
        #: fault): the batch that met the fault failed, the next ones run on the new one
        self.reopen = reopen
        #: operations that, alone in a batch and one statement for their arguments, run
        #: without BEGIN and COMMIT: the statement is its own transaction, durable when
        #: it returns, and two round trips shorter (PostgreSQL)
        self.single = single or {}
        self.quiet = quiet or {}
        self.ops: queue.SimpleQueue[_Op] = queue.SimpleQueue()
        #: sets the connection's busy timeout: zero (True) for an inline caller, the
        #: configured one (False) for the thread; None: never commit inline
        self.inline = inline if write else None
        #: reads that may run on the caller's thread, for the arguments each accepts
        #: (with ``inline`` setting the busy timeout)
        self.inline_reads = inline_reads if not write and inline is not None else None
        self._set_timeout = inline
        self._short = False  # the busy timeout is zero now
        #: held by whoever uses the connection: the thread for a batch, or an inline caller
        self.busy = threading.Lock()
        #: operations queued, and queued operations the thread has finished: equal when
        #: nothing is queued or in the thread's hands (an inline commit must not overtake)
        self.queued = 0
        self.finished = 0
        self.closed = False
        #: rung after each commit that changed something (writer only; None: no bell)
        self.bell: Any = None
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.thread.start()

    def submit(self, fn: Callable[..., T], args: tuple[Any, ...]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        if (
            self.inline is not None
            and self.queued == self.finished
            and len(getattr(loop, "_ready", _UNKNOWN)) <= INLINE_READY
            and self._run_inline(fn, args, fut)
        ):
            return fut
        reads = self.inline_reads
        if reads is not None and self.queued == self.finished:
            accepts = reads.get(fn)
            if accepts is not None and accepts(*args) and self._read_inline(fn, args, fut):
                return fut
        self.queued += 1
        self.ops.put((fn, args, fut))
        return fut

    def _run_inline(self, fn: Callable[..., Any], args: tuple[Any, ...], fut: Any) -> bool:
        """Run one write on the caller's thread; False: it was not run (the connection or
        another process's write lock is busy), queue it."""
        if not self.busy.acquire(blocking=False):
            return False
        try:
            if self.closed or self.queued != self.finished:
                return False
            assert self.inline is not None
            conn = self.conn
            if not self._short:
                self.inline(conn, True)
                self._short = True
            changes = conn.total_changes
            try:
                conn.execute(conn.dialect.begin)
            except self.errors:
                return False  # another process holds the write lock: the thread waits
            results = self._write_once([(fn, args, fut)], last=True, begun=changes)
        finally:
            self.busy.release()
        _deliver(results or [])
        return True

    def _read_inline(self, fn: Callable[..., Any], args: tuple[Any, ...], fut: Any) -> bool:
        """Run one small read on the caller's thread; False: not run (the connection is
        busy or broken, or the read failed), queue it."""
        if not self.busy.acquire(blocking=False):
            return False
        try:
            if self.closed or self.queued != self.finished or getattr(self.conn, "broken", False):
                return False
            assert self._set_timeout is not None
            if not self._short:
                self._set_timeout(self.conn, True)
                self._short = True
            try:
                value = fn(self.conn, *args)
            except Exception:
                return False  # the reader thread runs it again and reports what failed
        finally:
            self.busy.release()
        fut.set_result(value)
        return True

    def stop(self) -> asyncio.Future[None]:
        """Run what is queued, then close the connection and end the thread."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.queued += 1
        self.ops.put((_stop, (), fut))
        return fut

    def _error(self, exc: BaseException) -> BaseException:
        if isinstance(exc, self.errors):
            err = StorageError(f"{self.label}: {exc}")
            err.__cause__ = exc
            return err
        return exc

    def _main(self) -> None:
        ops = self.ops
        running = True
        while running:
            batch = [ops.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(ops.get_nowait())
                except queue.Empty:
                    break
            stop_at = next((i for i, op in enumerate(batch) if op[0] is _stop), None)
            if stop_at is not None:
                running = False
                rest, batch = batch[stop_at:], batch[:stop_at]
            with self.busy:
                results = self._run(batch) if batch else []
                if not running:
                    self.closed = True
                self.finished += len(batch) + (0 if running else len(rest))
            self._send(results)
            if not running:
                self._close(rest)

    def _run(self, batch: list[_Op]) -> list[_Result]:
        fault = self._reconnect()
        if fault is not None:
            return [(fut, False, fault) for _, _, fut in batch if fut is not None]
        if self._short:
            assert self._set_timeout is not None
            self._set_timeout(self.conn, False)  # the thread waits out other processes' locks
            self._short = False
        if not self.write:
            return self._run_read(batch)
        return self._run_write(batch)

    def _reconnect(self) -> BaseException | None:
        """Replace a broken connection before a batch; the error if that fails too."""
        if self.reopen is None or not getattr(self.conn, "broken", False):
            return None
        try:
            new = self.reopen()
        except Exception as exc:
            return self._error(exc)
        with contextlib.suppress(Exception):
            self.conn.close()
        self.conn = new
        log.warning("qanat: %s: connection re-established", self.label)
        return None

    def _close(self, rest: list[_Op]) -> None:
        error: BaseException | None = None
        try:
            self.conn.close()
        except self.errors as exc:  # pragma: no cover - close rarely fails
            error = self._error(exc)
        closed = StorageError(f"{self.label} is closed")
        out: list[_Result] = []
        for i, (fn, _, fut) in enumerate(rest):
            if fut is None:
                continue
            if i == 0 and fn is _stop:
                out.append((fut, error is None, error))
            else:
                out.append((fut, False, closed))
        self._send(out)

    @staticmethod
    def _send(results: list[_Result]) -> None:
        if not results:
            return
        by_loop: dict[asyncio.AbstractEventLoop, list[_Result]] = {}
        for r in results:
            by_loop.setdefault(r[0].get_loop(), []).append(r)
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass

    def _runs(self, batch: list[_Op]) -> list[tuple[list[_Op], Bulk | None]]:
        """The batch cut into runs: same-kind operations that have a bulk form, with it,
        and single operations (without)."""
        runs: list[tuple[list[_Op], Bulk | None]] = []
        i = 0
        while i < len(batch):
            j = i + 1
            bulk = self.bulk.get(batch[i][0])
            if bulk is not None:
                while j < len(batch) and batch[j][0] is batch[i][0]:
                    j += 1
            runs.append((batch[i:j], bulk if j - i > 1 else None))
            i = j
        return runs

    def _run_read(self, batch: list[_Op]) -> list[_Result]:
        conn = self.conn
        out: list[_Result] = []
        for ops, bulk in self._runs(batch):
            if bulk is not None:
                try:
                    values = bulk(conn, [op[1] for op in ops])
                except Exception:
                    values = None  # one by one: each gets its own error
                if values is not None:
                    out.extend((f, True, v) for (_, _, f), v in zip(ops, values, strict=True) if f)
                    continue
            for fn, args, fut in ops:
                assert fut is not None
                try:
                    out.append((fut, True, fn(conn, *args)))
                except Exception as exc:
                    out.append((fut, False, self._error(exc)))
        return out

    def _run_write(self, batch: list[_Op]) -> list[_Result]:
        for _ in range(RETRIES):
            out = self._write_once(batch)
            if out is not None:
                return out
        return self._write_once(batch, last=True) or []

    def _write_once(
        self, batch: list[_Op], last: bool = False, begun: int | None = None
    ) -> list[_Result] | None:
        """One try of a batch's transaction; None: it lost a deadlock (or a serialization
        failure) that the dialect says to retry, and nothing of it stands. ``begun``: the
        caller ran BEGIN already, when the connection's ``total_changes`` was that."""
        conn = self.conn
        if begun is None and len(batch) == 1 and self._is_single(batch[0]):
            return self._write_alone(batch[0], last)
        conn.loud = False
        out: list[_Result] = []
        try:
            if begun is None:
                changes = conn.total_changes
                conn.execute(conn.dialect.begin)
            else:
                changes = begun
            if len(batch) == 1:  # alone in its transaction: no savepoint needed
                fn, args, fut = batch[0]
                assert fut is not None
                try:
                    out.append((fut, True, fn(conn, *args)))
                except Exception as exc:
                    conn.execute("ROLLBACK")
                    if not last and self._retry(exc):
                        return None
                    return [(fut, False, self._error(exc))]
            else:
                for ops, bulk in self._runs(batch):
                    if bulk is None or not self._bulk(bulk, ops, out):
                        for op in ops:
                            self._one(op, out)
            conn.execute("COMMIT")
            if self.bell is not None and conn.total_changes != changes:
                self._ring(batch)
        except Exception as exc:  # BEGIN, savepoint machinery or COMMIT failed: nothing stands
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except self.errors:
                    pass
            if not last and self._retry(exc):
                return None
            err = self._error(exc)
            return [(fut, False, err) for _, _, fut in batch if fut is not None]
        return out

    def _is_single(self, op: _Op) -> bool:
        one = self.single.get(op[0])
        return one is not None and one(*op[1])

    def _write_alone(self, op: _Op, last: bool) -> list[_Result] | None:
        """A lone one-statement operation, its statement its own transaction."""
        fn, args, fut = op
        assert fut is not None
        conn = self.conn
        conn.loud = False
        changes = conn.total_changes
        try:
            value = fn(conn, *args)
        except Exception as exc:
            if not last and self._retry(exc):
                return None
            return [(fut, False, self._error(exc))]
        if self.bell is not None and conn.total_changes != changes:
            self._ring([op])
        return [(fut, True, value)]

    def _ring(self, batch: list[_Op]) -> None:
        """Ring the bell after a commit of ``batch`` (never raises): this process's own
        listeners too unless every operation in it was ``quiet`` (and none found, as it
        ran, that it wakes someone here: ``Conn.loud``)."""
        quiet = self.quiet
        if quiet and not self.conn.loud:
            for fn, args, _ in batch:
                is_quiet = quiet.get(fn)
                if is_quiet is None or not is_quiet(*args):
                    break
            else:
                self.bell.ring(local=False)  # only the SQLite doorbell is ever quiet
                return
        self.bell.ring()

    def _retry(self, exc: BaseException) -> bool:
        return self.retryable is not None and self.retryable(exc)

    def _one(self, op: _Op, out: list[_Result]) -> None:
        """Run one operation of a batch in its own savepoint."""
        fn, args, fut = op
        assert fut is not None
        conn = self.conn
        conn.execute("SAVEPOINT op")
        try:
            value = fn(conn, *args)
        except Exception as exc:
            if self._retry(exc):
                raise  # the whole batch runs again
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
            out.append((fut, False, self._error(exc)))
        else:
            conn.execute("RELEASE op")
            out.append((fut, True, value))

    def _bulk(self, bulk: Bulk, ops: list[_Op], out: list[_Result]) -> bool:
        """Run a run of same-kind operations as one statement; False: run them one by one."""
        conn = self.conn
        conn.execute("SAVEPOINT bulk")
        try:
            values = bulk(conn, [op[1] for op in ops])
        except Exception:
            values = None
        if values is None:
            conn.execute("ROLLBACK TO bulk")
            conn.execute("RELEASE bulk")
            return False
        conn.execute("RELEASE bulk")
        out.extend((fut, True, v) for (_, _, fut), v in zip(ops, values, strict=True) if fut)
        return True


def _stop(conn: Any) -> None:  # a marker, never called
    raise AssertionError("unreachable")
