"""Noticing change: a ticker that polls storage cheaply, and a watcher of executions.

Changes made in this process wake waiters directly. Changes committed by other
processes ring the storage's doorbell (``Storage.listen``; for SQLite a unix datagram
after each commit, ``storage/doorbell.py``): the ticker then checks
``storage.changed()`` (a ``PRAGMA data_version``, microseconds) at once and wakes
everyone. Polling ``changed()`` remains the fallback: every ``BELL_POLL`` with a
doorbell, and without one every millisecond while there was recent activity, a
little slower when idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qanat._aio import wait_any
from qanat.errors import QanatError
from qanat.storage.base import FINISHED_STATUSES, ExecutionRecord, now
from qanat.views import parse_progress

if TYPE_CHECKING:
    from qanat.queue import Queue

log = logging.getLogger("qanat")

FAST_POLL = 0.001
IDLE_POLL = 0.005
IDLE_AFTER = 1.0
#: The fallback poll while the storage's doorbell carries the fast path.
BELL_POLL = 0.05


async def cancel_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background task and wait until it has ended."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Ticker:
    """Broadcasts "something may have changed" to every loop that waits on it."""

    def __init__(
        self,
        changed: Callable[[], Any],
        listen: Callable[[Callable[[], None]], Callable[[], None] | None] | None = None,
    ) -> None:
        self._changed = changed
        self._listen = listen
        self._event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_change = now()
        self._rang = False
        self._nap: asyncio.Future[None] | None = None
        self.users = 0

    def event(self) -> asyncio.Event:
        """The event the next change sets; take it *before* checking state."""
        return self._event

    def fire(self) -> None:
        """Wake everyone waiting on the current event."""
        ev, self._event = self._event, asyncio.Event()
        ev.set()

    def ring(self) -> None:
        """The doorbell rang: check for a change now instead of at the next poll."""
        self._rang = True
        nap = self._nap
        if nap is not None and not nap.done():
            nap.set_result(None)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="qanat-ticker")

    async def stop(self) -> None:
        await cancel_task(self._task)
        self._task = None
        self._event = asyncio.Event()  # a new loop may use this queue next

    def _storage_listen(self) -> Callable[[Callable[[], None]], Callable[[], None] | None] | None:
        return self._listen

    async def _sleep(self, delay: float) -> None:
        """Sleep ``delay`` seconds or until the doorbell rings."""
        if self._rang:
            return
        loop = asyncio.get_running_loop()
        self._nap = nap = loop.create_future()
        handle = loop.call_later(delay, _wake, nap)
        try:
            await nap
        finally:
            handle.cancel()
            self._nap = None

    async def _run(self) -> None:
        unlisten = None
        listen = self._storage_listen()
        if listen is not None:
            try:
                unlisten = listen(self.ring)
            except Exception:
                log.debug("qanat: listening for storage changes failed", exc_info=True)
        try:
            while True:
                if unlisten is not None:
                    delay = BELL_POLL
                else:
                    idle = now() - self._last_change > IDLE_AFTER
                    delay = IDLE_POLL if idle else FAST_POLL
                await self._sleep(delay)
                self._rang = False
                try:
                    changed = await self._changed()
                except Exception:
                    log.exception("qanat: polling storage for changes failed")
                    continue
                if changed:
                    self._last_change = now()
                    self.fire()
        finally:
            if unlisten is not None:
                unlisten()


def _missing(execution_id: str) -> QanatError:
    return QanatError(f"execution {execution_id} does not exist")


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Watcher:
    """Waits for executions to finish and reports their progress to callbacks."""

    def __init__(self, queue: Queue) -> None:
        self._queue = queue
        self._waiters: dict[str, list[asyncio.Future[ExecutionRecord]]] = {}
        self._progress: dict[str, tuple[str | None, list[Callable[[Any], Any]]]] = {}
        self._task: asyncio.Task[None] | None = None
        #: waited-for executions not read yet: a failed or empty first read fails them
        self._unread: set[str] = set()
        #: set when a wait adds to ``_unread`` while the watcher runs: its next read,
        #: made at once, includes them (one ``get_many`` for many waits started together,
        #: e.g. a job awaiting 200 children, rather than a ``get`` each)
        self._nudge = asyncio.Event()

    async def wait(self, execution_id: str, timeout: float | None = None) -> ExecutionRecord:
        """The record of the execution once it is finished.

        Raises ``QanatError`` if it does not exist, and the storage's error if reading
        it fails; ``TimeoutError`` after ``timeout`` seconds."""
        fut: asyncio.Future[ExecutionRecord] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(execution_id, []).append(fut)
        worker = self._queue.worker
        try:
            if worker is not None and execution_id in worker.active:
                # it runs here, so it exists and has not finished: its finish resolves
                # this wait directly, and if it leaves this worker unfinished (a sleep,
                # a retry) the worker hands it to the watcher then (``follow``)
                pass
            else:
                # the watcher's next read, made at once, includes this execution: one
                # read instead of a ``get`` of our own followed by the watcher's
                self._unread.add(execution_id)
                if self._task is None or self._task.done():
                    self._ensure_running()
                else:
                    self._nudge.set()
            # the future is this wait's alone (``finished`` skips a done one), so it
            # needs no shield, and without a timeout no wait_for: one loop turn from
            # its result to this caller instead of two or three
            if timeout is None:
                return await fut
            return await asyncio.wait_for(fut, timeout)
        finally:
            waiters = self._waiters.get(execution_id)
            if waiters is not None:
                if fut in waiters:
                    waiters.remove(fut)
                if not waiters:
                    del self._waiters[execution_id]
                    self._unread.discard(execution_id)

    def on_progress(self, execution_id: str, callback: Callable[[Any], Any]) -> None:
        last, cbs = self._progress.get(execution_id, (None, []))
        cbs.append(callback)
        self._progress[execution_id] = (last, cbs)
        self._ensure_running()

    def waiting(self, execution_id: str) -> bool:
        """Whether anything in this process waits for this execution to finish."""
        return execution_id in self._waiters

    def follow(self, execution_id: str) -> None:
        """An execution stopped running in this process's worker: if anything here still
        waits for it (it left unfinished: a sleep, a retry, a release), the watcher reads
        it from now on, first at once."""
        if any(not f.done() for f in self._waiters.get(execution_id, ())):
            self._unread.add(execution_id)
            if self._task is None or self._task.done():
                self._ensure_running()
            else:
                self._nudge.set()

    def finished(self, rec: ExecutionRecord) -> None:
        """A finish committed in this process: wake its waiters without reading storage."""
        for fut in self._waiters.get(rec.id, ()):
            if not fut.done():
                fut.set_result(rec)

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._queue.ticker.start()
            self._nudge = asyncio.Event()  # of this loop (a queue may be reused on another)
            self._task = asyncio.get_running_loop().create_task(self._run(), name="qanat-watcher")

    async def stop(self) -> None:
        await cancel_task(self._task)
        self._task = None

    async def _run(self) -> None:
        storage = self._queue.storage
        ticker = self._queue.ticker
        changed = True  # read everything waited for (else only what is unread)
        while self._waiters or self._progress:
            ev = ticker.event()
            self._nudge.clear()
            worker = self._queue.worker
            local = worker.active if worker is not None else {}
            unread, self._unread = self._unread, set()
            # a first read, and progress, need the whole record (it says whether the
            # execution exists, and how far it got); the others only matter once they
            # have finished: ``finished_among`` leaves the rest where they are stored
            ids = list(unread)
            again: list[str] = []
            if changed:  # else new waits only: nothing changed since the others were read
                ids += [i for i in self._progress if i not in unread]
                # executions this process runs resolve their waiters directly when they
                # finish (read once all the same: one may have finished before the wait)
                again = [
                    i
                    for i in self._waiters
                    if i not in local and i not in unread and i not in self._progress
                ]
                if ids:  # a get_many is made anyway: one read for all
                    ids, again = ids + again, []
            try:
                recs = await storage.get_many(ids) if ids else []
            except Exception as exc:
                if unread:  # a first read failed: its callers hear why, as from a get
                    self._fail(unread, exc)
                else:
                    log.exception("qanat: reading executions for waiters failed")
                recs = []
            else:
                if unread:
                    self._fail(unread - {r.id for r in recs}, None)
            if again:
                try:
                    recs += await storage.finished_among(again)
                except Exception:
                    log.exception("qanat: reading executions for waiters failed")
            for rec in recs:
                self._deliver(rec)
            if not self._progress and all(f.done() for fs in self._waiters.values() for f in fs):
                # nothing left to wait for (the callers just have not run yet): end now,
                # so that the next wait starts a watcher whose first read includes it
                return
            await wait_any((ev, self._nudge), 0.5)
            # a change, or the fallback poll: read everything; a nudge alone: the new
            changed = ev.is_set() or not self._nudge.is_set()

    def _fail(self, ids: set[str], exc: Exception | None) -> None:
        """End the waits for ``ids`` with ``exc`` (None: they do not exist)."""
        for ident in ids:
            for fut in self._waiters.get(ident, ()):
                if not fut.done():
                    fut.set_exception(exc if exc is not None else _missing(ident))

    def _deliver(self, rec: ExecutionRecord) -> None:
        if rec.id in self._progress:
            last, cbs = self._progress[rec.id]
            if rec.progress is not None and rec.progress != last:
                self._progress[rec.id] = (rec.progress, cbs)
                value = parse_progress(rec.progress)
                for cb in cbs:
                    try:
                        res = cb(value)
                        if asyncio.iscoroutine(res):
                            asyncio.get_running_loop().create_task(res)
                    except Exception:
                        log.exception("qanat: progress callback failed")
            if rec.status in FINISHED_STATUSES:
                del self._progress[rec.id]
        if rec.status in FINISHED_STATUSES:
            self.finished(rec)
