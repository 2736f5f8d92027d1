"""The storage contract every backend implements (its records: ``qanat.storage.records``).

A backend stores and loads; the rules (which status may follow which, what a claim
takes, what a cancel touches) are spelled out here once, in the docstrings, and
checked by the contract test suite in ``tests/contract`` against every backend.

Times are floats: seconds since the epoch (UTC). Payloads (input, output, step
results, errors) are JSON text produced by the codec above the storage.

Claiming uses one column, ``available_at``: the moment an execution may next be
taken by a worker. For an unowned execution it is when it is due (``run_at``); for an
owned one it is the end of its lease. ``None`` means nobody may take it (finished, or
suspended until something wakes it). A claim takes executions whose ``available_at``
has passed, so an expired lease and a due execution are found the same way.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Sequence

from qanat.storage.records import (
    CANCELLED,
    COMPLETED,
    FAILED,
    FINISHED_STATUSES,
    LIVE_STATUSES,
    PAUSED,
    PENDING,
    RUNNING,
    SKIPPED,
    STATUSES,
    WAITING,
    Checkpoint,
    CompletionEvent,
    EventPage,
    EventRecord,
    ExecutionFilter,
    ExecutionRecord,
    Finish,
    LogRecord,
    Page,
    Stats,
    StepRecord,
    TriggerFailure,
    Waiter,
    WaitState,
    WorkerRecord,
    decode_cursor,
    encode_cursor,
)

__all__ = [
    "CANCELLED",
    "COMPLETED",
    "FAILED",
    "FINISHED_STATUSES",
    "LEAD_PREFIX",
    "LIVE_STATUSES",
    "PAUSED",
    "PENDING",
    "RUNNING",
    "SKIPPED",
    "STATUSES",
    "WAITING",
    "Checkpoint",
    "CompletionEvent",
    "EventPage",
    "EventRecord",
    "ExecutionFilter",
    "ExecutionRecord",
    "Finish",
    "LogRecord",
    "Page",
    "Stats",
    "StepRecord",
    "Storage",
    "TriggerFailure",
    "WaitState",
    "Waiter",
    "WorkerRecord",
    "decode_cursor",
    "encode_cursor",
    "now",
]


def now() -> float:
    """This host's clock: seconds since the epoch (a one-host storage's clock)."""
    return time.time()


#: ``Storage.lead`` roles are step-slot names under this prefix (no step name has ":")
LEAD_PREFIX = "qanat:lead:"


class Storage(abc.ABC):
    """The contract between the engine and a storage backend.

    Every writing method is one atomic transaction. Methods that act for a worker take
    ``owner`` and do nothing (returning False, a count of 0 or why it must stop) when
    storage no longer lists that worker as the execution's owner of a ``running`` or
    ``waiting`` execution: a worker that lost its lease can never overwrite the work of
    the one that took over. This holds for every write a worker makes for an execution:
    ``checkpoint``, ``finish``, ``suspend``, ``mark``, ``release``, ``wait``,
    ``end_wait``, ``enter_step``, ``set_progress``, ``append_logs`` and ``renew``.
    ``set_progress`` and ``append_logs`` also take ``owner=None``: a write made under
    no claim (a client, or the engine's hooks after a finish that worker committed),
    stored unconditionally. Not fenced, because a stale worker repeating them changes
    nothing: ``enqueue`` of a keyed child and ``send`` of a step's event (both
    idempotent, by key and by a deterministic event id) and ``acquire_step`` (a slot
    leased to the worker, given back when its step ends).
    """

    #: True when commits by other processes can only be noticed by polling.
    polls: bool = True
    #: True when ``query`` and ``count`` honour ``ExecutionFilter.search`` (a backend
    #: that does not would match everything: callers refuse a search there).
    searches: bool = False
    #: Set by ``claim``: the earliest time a gate with parked executions opens (a rolling
    #: window or throttle), so the worker can claim again then. None: nothing to wait for.
    next_wake: float | None = None
    #: How long after a commit of this process ``listen`` callbacks of this process run
    #: (backends that ring their own listeners directly may wait a little: the engine
    #: wakes what must move at once, and an immediate wake-up would compete with the
    #: work the commit started). A node sets 0: its commits are for other processes.
    local_wake_delay: float = 0.0
    #: True in a node: this process's listeners stand for the workers and clients it
    #: serves (they answer their long polls), so a commit that only this process's own
    #: engine would care about still wakes them.
    serves_others: bool = False
    #: True when a ``claim`` that finds nothing costs about what ``has_ready`` costs
    #: (one round trip of similar work, nothing written): a worker woken by a change
    #: then claims at once instead of asking first, one round trip sooner when
    #: something did become claimable (Redis: both are one script).
    claims_without_asking: bool = False

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect, create or migrate the schema, refuse an incompatible store."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; pending writes are committed first."""

    async def changed(self) -> bool:
        """Cheap check: did anything commit since the last call? True when unsure."""
        return True

    def listen(self, callback: Callable[[], None]) -> Callable[[], None] | None:
        """Call ``callback`` on the running event loop soon after commits (optional hook).

        Commits of other processes *and* of this one that changed something call it;
        it is a hint to check ``changed()`` now rather than at the next poll. Returns
        a function that stops it, or None when this backend cannot notify: the caller
        must then poll ``changed()`` often (the default).
        """
        return None

    # --- time -------------------------------------------------------------------
    # The rule: a time that is *written* and that other machines compare (a lease end,
    # a due time, a sleep's wake time) is the storage's time: computed inside the
    # storage's transaction (``at=None``, a lease as a duration) or read by ``now()``.
    # ``clock()`` is an estimate for *local timers only* (how long to wait before the
    # next claim, a hot sleep), never written.

    def clock(self) -> float:
        """The storage's now, estimated without a round trip: for local timers only.

        One-host storages (SQLite, memory) use this host's clock; PostgreSQL this host's
        clock corrected by the offset to the server's, measured in its transactions.
        """
        return time.time()

    async def now(self) -> float:
        """The storage's now, exactly (PostgreSQL: read from the server), for times that
        are written and compared by other machines when no transaction computes them."""
        return time.time()

    async def lead(self, role: str, holder: str, lease: float) -> bool:
        """Be the one ``holder`` doing ``role`` (elected housekeeping): take or extend a
        lease row for ``lease`` seconds of the storage's clock. True while ``holder``
        leads; another holder takes over once the lease lapses (its leader died). The
        lease is a step slot (``acquire_step``) that ``renew`` of the holder extends too."""
        return await self.acquire_step(LEAD_PREFIX + role, holder, holder, 1, lease)

    async def resign(self, role: str, holder: str) -> None:
        """Give up leading ``role`` (a stopping worker), so another takes over at once."""
        await self.release_step(LEAD_PREFIX + role, holder)

    # --- queue ------------------------------------------------------------------

    @abc.abstractmethod
    async def enqueue(self, records: Sequence[ExecutionRecord]) -> list[ExecutionRecord]:
        """Store new executions in one transaction.

        A record whose ``(job, key)`` already exists is not stored: the existing one is
        returned in its place. The result lists one record per input, in order.
        """

    @abc.abstractmethod
    async def claim(
        self, owner: str, jobs: Sequence[str], limit: int, lease: float, at: float | None = None
    ) -> list[ExecutionRecord]:
        """Take up to ``limit`` executions of ``jobs`` whose ``available_at`` <= ``at``
        (None: the storage's now, read in the claim's transaction).

        Only live executions qualify (pending, running, waiting), highest priority
        first, then oldest ``available_at``. Each taken one becomes ``running``, owned
        by ``owner``, ``available_at = at + lease``, ``claims + 1``, and ``started_at``
        is set if it was unset. Taken from an owner that still holds it (its lease lapsed,
        or ``expire_owner`` made it claimable: that worker died or froze without letting
        it go), ``recoveries + 1``; an unowned one (new, released, suspended, retried)
        keeps its count. Executions past their ``deadline`` are not returned; they are
        failed with a Timeout error in the same transaction. Executions of a paused job
        (``pause_job``) are not taken, whatever their status: the paused set is read in
        the claim's own transaction, so a pause holds for every worker.
        """

    async def has_ready(self, jobs: Sequence[str], at: float) -> bool:
        """A read-only hint: might ``claim`` find something now? (True when unsure.)

        Lets a worker skip a write transaction when storage changed but nothing became
        claimable, e.g. after its own checkpoints.
        """
        return True

    @abc.abstractmethod
    async def renew(
        self, owner: str, ids: Sequence[str], lease: float, at: float | None = None
    ) -> dict[str, str]:
        """Extend the lease of ``ids`` held by ``owner`` (and its step slots) to
        ``at + lease`` (``at`` None: the storage's now, read in this transaction).

        Returns, for each id that ``owner`` should stop running, why: ``cancelled``,
        ``paused`` (pause requested) or ``lost`` (another owner or finished).
        """

    @abc.abstractmethod
    async def checkpoint(self, execution_id: str, owner: str, cp: Checkpoint) -> str | None:
        """Record a step result (insert or replace at its key) and enqueue its children.

        A stored step resets ``recoveries`` to 0 and ``step_in_flight`` to None (the
        execution got past whatever killed workers before). A child already stored under
        its id is kept as it is, so a checkpoint repeated after a fault that hid whether
        it committed stores each child once (it is safe to retry). Returns None on
        success, otherwise why the owner must stop (see ``renew``), with nothing written;
        a pause request is reported here after the step is stored.
        """

    @abc.abstractmethod
    async def finish(self, execution_id: str, owner: str, fin: Finish) -> bool:
        """End the current attempt: a final status, or back to pending for a retry.

        A final status sets ``completed_at``, clears the owner and ``available_at``, and
        makes the parent due (``available_at = now``) if it is suspended waiting.
        With ``completed``, ``fin.children`` are enqueued (as ``enqueue``) and
        ``fin.failures`` recorded in the same transaction; ``fin.logs`` are appended with
        any status. A retry resets ``recoveries`` and ``step_in_flight`` (the attempt
        ended in a worker that survived it).
        Returns False if ``owner`` no longer owns it (nothing written).
        """

    @abc.abstractmethod
    async def suspend(
        self, execution_id: str, owner: str, status: str, available_at: float | None
    ) -> bool:
        """Leave the worker: ``waiting`` (until ``available_at`` or a wake) or ``paused``.

        Clears the owner. A pending pause request turns ``waiting`` into ``paused``.
        """

    @abc.abstractmethod
    async def mark(self, execution_id: str, owner: str, status: str) -> bool:
        """Switch an owned execution between ``running`` and ``waiting`` (on a child, or in
        a short sleep held in memory). The owner and lease are kept. False if not owned."""

    @abc.abstractmethod
    async def release(self, owner: str, ids: Sequence[str]) -> None:
        """Give executions back for others to take at once (graceful shutdown); those
        ``owner`` no longer owns are left alone. Not a recovery: the count is kept."""

    @abc.abstractmethod
    async def enter_step(self, execution_id: str, owner: str, key: str) -> bool:
        """Record ``key`` as the ``step_in_flight`` of an owned execution: the step it is
        about to run. The engine calls it only on recovered executions (``recoveries``
        > 0), before a step that runs user code, so the normal path never pays for it.
        False if not owned (nothing written)."""

    # --- flow control -----------------------------------------------------------

    async def refill(self, at: float | None = None) -> int:
        """Repair pass (housekeeping): unpark the executions that their gates let start at
        ``at`` (None: the storage's now) but that a missed wake-up left parked. Returns
        how many."""
        return 0

    @abc.abstractmethod
    async def acquire_step(
        self, name: str, holder: str, owner: str, limit: int, lease: float, at: float | None = None
    ) -> bool:
        """Take one of ``limit`` slots of step ``name`` for ``holder`` (an execution's step)
        until ``at + lease`` (``at`` None: the storage's now), renewed with ``owner``'s
        leases. True if taken or already held (a held slot's lease is extended)."""

    @abc.abstractmethod
    async def release_step(self, name: str, holder: str) -> None:
        """Give a step slot back."""

    # --- control ----------------------------------------------------------------

    @abc.abstractmethod
    async def cancel(self, ids: Sequence[str], reason: str | None) -> list[ExecutionRecord]:
        """Cancel live executions and, recursively, their live children.

        Returns the records that were live before and are cancelled now (an owned one
        keeps its owner until the owner notices through ``renew``/``checkpoint``).
        """

    @abc.abstractmethod
    async def pause(self, execution_id: str) -> str | None:
        """Pause: pending becomes paused at once; an owned one gets a pause request.

        Returns the status after the call, or None if there is no such execution.
        """

    @abc.abstractmethod
    async def resume(self, execution_id: str) -> str | None:
        """Undo a pause: paused becomes pending (due now), a pause request is dropped."""

    @abc.abstractmethod
    async def restart(self, execution_id: str, at: float) -> ExecutionRecord | None:
        """Start a failed or cancelled execution again from the beginning.

        Its steps and logs are deleted, attempt goes back to 1, status to pending,
        ``claims`` and ``recoveries`` to 0, ``step_in_flight`` to None.
        Returns None if it does not exist or is not failed or cancelled.
        """

    @abc.abstractmethod
    async def pause_job(self, job: str, paused: bool) -> bool:
        """Pause (``paused=True``) or resume a whole job: while paused, ``claim`` and
        ``has_ready`` pass over its executions (see ``claim``); owned ones carry on.
        Returns True if this changed the job's state."""

    @abc.abstractmethod
    async def paused_jobs(self) -> set[str]:
        """The names of the paused jobs."""

    @abc.abstractmethod
    async def wake(self, ids: Sequence[str], at: float) -> None:
        """Make suspended waiting executions due at ``at``."""

    # --- reading ----------------------------------------------------------------

    @abc.abstractmethod
    async def get(self, execution_id: str) -> ExecutionRecord | None:
        """One execution, or None."""

    @abc.abstractmethod
    async def get_many(self, ids: Sequence[str], *, payloads: bool = True) -> list[ExecutionRecord]:
        """The executions among ``ids`` that exist, in no particular order.

        With ``payloads=False`` a backend may leave ``input`` empty and ``output`` and
        ``error`` None: for readers of status and control fields only (a worker
        watching its running executions), so that large payloads are not copied.
        """

    async def finished_among(self, ids: Sequence[str]) -> list[ExecutionRecord]:
        """The executions among ``ids`` that have finished, with their payloads, in no
        particular order; missing and unfinished ones are left out.

        What a waiter for results reads again after a change: most of what it waits for
        (a job's 200 children) has not finished yet, and a backend that can skip those
        where they are stored, rather than send and decode them, overrides this."""
        return [r for r in await self.get_many(ids) if r.status in FINISHED_STATUSES]

    @abc.abstractmethod
    async def query(self, flt: ExecutionFilter, limit: int, cursor: str | None) -> Page:
        """A page of executions matching ``flt``, newest first (``created_at``, ``id``)."""

    @abc.abstractmethod
    async def find_cached(self, job: str, input: str, since: float) -> ExecutionRecord | None:
        """The newest completed execution of ``job`` with this exact input, completed
        at or after ``since``."""

    @abc.abstractmethod
    async def steps(self, execution_id: str) -> list[StepRecord]:
        """The recorded steps of an execution, in the order they started."""

    async def count(self, flt: ExecutionFilter) -> int:
        """How many executions match ``flt`` (a bulk action's confirmation). This default
        pages through ``query``; SQL backends count in one statement."""
        n, cursor = 0, None
        while True:
            page = await self.query(flt, 1000, cursor)
            n += len(page.items)
            if page.cursor is None:
                return n
            cursor = page.cursor

    async def status_counts(self) -> dict[str, dict[str, int]]:
        """Executions by job and status (``stats().by_job`` without the run times)."""
        return (await self.stats()).by_job

    @abc.abstractmethod
    async def stats(self) -> Stats:
        """Counts by status and job, retries, run times."""

    # --- progress and logs ------------------------------------------------------

    @abc.abstractmethod
    async def set_progress(self, execution_id: str, owner: str | None, progress: str) -> bool:
        """Store the execution's latest progress (JSON text), if ``owner`` owns it (or
        ``owner`` is None: not a worker write). False if nothing was written."""

    @abc.abstractmethod
    async def append_logs(self, owner: str | None, logs: Sequence[LogRecord]) -> int:
        """Append log lines; with an ``owner``, only the lines of executions it owns (the
        others are dropped). Returns how many lines were stored."""

    @abc.abstractmethod
    async def logs(self, execution_id: str) -> list[LogRecord]:
        """An execution's log lines in order."""

    # --- housekeeping -------------------------------------------------------------

    @abc.abstractmethod
    async def register_worker(self, worker_id: str, host: str, pid: int, at: float) -> None:
        """Record a live worker process (for same-host dead-process reclaim)."""

    @abc.abstractmethod
    async def unregister_worker(self, worker_id: str) -> None:
        """Forget a worker that stopped."""

    @abc.abstractmethod
    async def workers(self, host: str) -> list[tuple[str, int]]:
        """The (worker_id, pid) pairs registered on ``host``."""

    async def worker_list(self) -> list[WorkerRecord]:
        """Every registered worker (all hosts), oldest first, each with the ids of the live
        executions (running or waiting) it owns and their latest lease end (for the
        dashboard). Optional: a backend that cannot list them raises NotImplementedError."""
        raise NotImplementedError(f"{type(self).__name__} does not list workers")

    @abc.abstractmethod
    async def expire_owner(self, owner: str, at: float | None = None) -> int:
        """Make every execution owned by ``owner`` claimable at ``at`` (None: the storage's
        now); forget the worker."""

    @abc.abstractmethod
    async def purge(self, status: str, before: float | None, keep: int | None) -> int:
        """Delete finished executions of ``status`` completed before ``before``, or all but
        the newest ``keep``, with their steps and logs. Returns how many."""

    # --- events (pipes) -------------------------------------------------------------

    @abc.abstractmethod
    async def send(
        self,
        event: EventRecord,
        executions: Sequence[ExecutionRecord],
        failures: Sequence[TriggerFailure],
    ) -> EventRecord:
        """Store an event, enqueue the executions it triggers and record its failed
        triggers, in one transaction.

        The result is the stored event with ``executions`` (the ids stored, in order; an
        execution whose ``(job, key)`` exists is the existing one, as in ``enqueue``) and
        ``failures``. An event whose id is already stored is not stored again: the stored
        one is returned as it is and nothing is written (a replayed send).

        In the same transaction, waiters of the event's pipe are served: each open dict
        waiter whose (shape, value) the event's data matches gets the event as its
        delivery, each open predicate waiter gets ``pokes + 1``, and their executions,
        if suspended waiting, become due now. Found by index, never by scanning. The ids
        of the executions whose dict waiters received the event are stored with it and
        reported as ``woke`` (here and by ``events``).
        """

    @abc.abstractmethod
    async def events(
        self, pipe: str | None, since: float | None, limit: int, cursor: str | None
    ) -> EventPage:
        """A page of events (of ``pipe``, sent at or after ``since``), newest first
        (``sent_at``, ``id``), each with its triggered executions, failed triggers and
        the executions it woke."""

    @abc.abstractmethod
    async def trigger_failures(self, source: str) -> list[TriggerFailure]:
        """The failed triggers recorded for an event id or an upstream execution id."""

    # --- waiting (pipe.wait_for) -----------------------------------------------------------

    @abc.abstractmethod
    async def wait(
        self,
        execution_id: str,
        owner: str,
        waiter: Waiter,
        pokes: int | None,
        at: float | None = None,
    ) -> WaitState:
        """Record a waiter (if none is stored at its execution and key) and, in the same
        transaction, suspend the execution unless the wait is over.

        With a stop reason other than ``paused`` (see ``checkpoint``) nothing is written.
        The execution is suspended (``waiting`` until ``waiter.deadline``, or ``paused``
        if a pause was requested; owner cleared) when the stored waiter has no delivery,
        its deadline is after ``at`` (None: the storage's now), and ``pokes`` is None or
        equals its ``pokes`` (a predicate waiter suspends only if no send came since it
        last looked).
        """

    @abc.abstractmethod
    async def end_wait(self, execution_id: str, owner: str, cp: Checkpoint) -> str | None:
        """Checkpoint the wait step's result (as ``checkpoint``) and forget the waiter at
        ``cp.step.key`` in one transaction."""

    @abc.abstractmethod
    async def waiter(self, execution_id: str, key: str) -> Waiter | None:
        """The stored waiter of an execution at a step key, or None."""

    async def open_waiters(self, pipe: str | None, limit: int) -> list[Waiter]:
        """Up to ``limit`` waiters with no delivery yet (of ``pipe``, or of every pipe),
        oldest first (``since``): who waits on what match, for the dashboard. Optional: a
        backend that cannot list them raises NotImplementedError."""
        raise NotImplementedError(f"{type(self).__name__} does not list waiters")

    @abc.abstractmethod
    async def awaited(self, prefix: str) -> set[str]:
        """The pipes (names starting with ``prefix``) that open waiters wait on."""

    @abc.abstractmethod
    async def purge_events(self, before: float | None, keep: int | None) -> int:
        """Delete events sent before ``before``, or all but the newest ``keep``, with their
        links to executions and their failed triggers; failed triggers of job outputs
        recorded before ``before`` go too. Returns how many events."""
