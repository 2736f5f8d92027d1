"""``HttpStorage``: the storage contract over HTTP, to a ``qanat serve`` node.

Each contract method is one request to the node (``POST /node/v1/call/<method>``),
which runs the same method on its own storage; a worker's fenced writes for its
executions (checkpoints, finishes, progress, logs, ...) are *reports*, coalesced into
``POST /node/v1/report`` batches: those made while one batch is on the wire go in the
next, in order. The heartbeat is ``renew`` (all of a worker's leases in one request,
answered with what it must stop). Waiting for change is a long poll
(``GET /node/v1/watch``) feeding ``listen``/``changed``. The protocol is written down
in ``docs/node.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any

from qanat._aio import raise_if_cancelled
from qanat.errors import PayloadTooLarge, StorageError
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
    Waiter,
    WaitState,
    WorkerRecord,
)
from qanat.storage.http.protocol import PROTOCOL, WATCH_HOLD, WATCH_IDS, signature
from qanat.storage.http.tokens import resolve_token
from qanat.storage.http.transport import Transport

log = logging.getLogger("qanat")

#: Reports per ``/report`` request at most (the rest go in the next one).
BATCH = 128
#: Execution ids the long poll may carry (ours are URL-safe; anything else is read apart).
_ID = re.compile(r"[A-Za-z0-9_.~-]{1,128}")


class HttpStorage(Storage):
    """The storage of a qanat node at ``url`` (``http://host:4000`` or ``https://``).

    ``token`` (else ``$QANAT_TOKEN``) is sent as ``Authorization: Bearer``. ``open``
    checks that the node answers, accepts the token and speaks this protocol version,
    and says which of these failed. Network blips are retried for ``retry_for``
    seconds (see ``qanat.storage.http.transport``). ``transport`` is for tests: an
    in-process node (its ASGI app) or an httpx transport.
    """

    polls = False

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        retry_for: float = 30.0,
        transport: Any = None,
    ) -> None:
        scheme = url.split("://", 1)[0].lower()
        if scheme not in ("http", "https") or not urllib.parse.urlsplit(url).hostname:
            raise StorageError(f"invalid node URL {url!r}: write http://host:port or https://…")
        parts = urllib.parse.urlsplit(url)
        if parts.query or parts.username or parts.password:
            raise StorageError(
                f"invalid node URL {url!r}: no query or credentials in the URL (a URL ends up "
                "in logs); pass the token as Queue(token=...) or QANAT_TOKEN"
            )
        self.url = url.rstrip("/")
        self.token = resolve_token(token)
        self._t = Transport(self.url, self.token, retry_for=retry_for, transport=transport)
        #: lease ids of this client's claims, by execution (sent with its reports)
        self._leases: dict[str, str] = {}
        self._pending: list[tuple[str, dict[str, Any], asyncio.Future[Any]]] = []
        self._drain: asyncio.Task[None] | None = None
        self._callbacks: list[Callable[[], None]] = []
        self._watch: asyncio.Task[None] | None = None
        self._healthy = False
        self._dirty = True
        self.boot: str | None = None
        #: the jobs this worker asks ``has_ready`` about, sent with each long poll so
        #: that the node answers it with the change (no round trip per change), and
        #: that answer: (the long poll's seq it was computed at, ready)
        self._ready_jobs: tuple[str, ...] | None = None
        self._ready: tuple[int, bool] | None = None
        #: likewise the executions a waiting client reads after each change (its last
        #: ``get_many`` with payloads), and the node's records of them: (seq, ids, records)
        self._read_ids: tuple[str, ...] | None = None
        self._records: tuple[int, frozenset[str], list[ExecutionRecord]] | None = None
        self._seq = -1
        self._watch_boot: str | None = None

    def __repr__(self) -> str:
        return f"HttpStorage({self.url!r})"

    # --- lifecycle --------------------------------------------------------------------

    async def open(self) -> None:
        self._t.start()
        try:
            _, hello = await self._t.request("GET", "/hello", retry_for=0)
        except BaseException:
            await self._t.close()
            raise
        if not isinstance(hello, dict) or hello.get("protocol") != PROTOCOL:
            await self._t.close()
            got = hello.get("protocol") if isinstance(hello, dict) else hello
            raise StorageError(
                f"the qanat node at {self.url} speaks protocol version {got!r}, this client "
                f"version {PROTOCOL}: upgrade the older of the two"
            )
        self.boot = hello.get("boot")
        # the node's storage decides whether an input-text search can be honoured
        self.searches = bool(hello.get("searches", False))

    async def close(self) -> None:
        task, self._watch = self._watch, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._drain is not None and not self._drain.done():
            with contextlib.suppress(Exception):
                await self._drain
        await self._t.close()

    # --- change ---------------------------------------------------------------------

    def listen(self, callback: Callable[[], None]) -> Callable[[], None] | None:
        self._callbacks.append(callback)
        if self._watch is None:
            self._watch = asyncio.get_running_loop().create_task(
                self._watch_loop(), name="qanat-node-watch"
            )

        def stop() -> None:
            with contextlib.suppress(ValueError):
                self._callbacks.remove(callback)

        return stop

    async def changed(self) -> bool:
        if not self._healthy or self._watch is None:
            return True  # no long poll carrying changes: unsure
        dirty, self._dirty = self._dirty, False
        return dirty

    def _ring(self) -> None:
        self._dirty = True
        for cb in list(self._callbacks):
            try:
                cb()
            except Exception:
                log.debug("qanat: a storage listener failed", exc_info=True)

    async def _watch_loop(self) -> None:
        boot: str | None = None
        seq = -1
        failures = 0
        while True:
            params: dict[str, Any] = {"boot": boot or "", "seq": seq}
            if self._ready_jobs is not None:
                params["jobs"] = ",".join(self._ready_jobs)
            read_ids = self._read_ids
            if read_ids is not None:
                params["ids"] = ",".join(read_ids)
            query = urllib.parse.urlencode(params)
            try:
                _, data = await self._t.request(
                    "GET", f"/watch?{query}", timeout=WATCH_HOLD + 15, retry_for=0
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_cancelled()
                if self._healthy or failures == 0:
                    log.warning("qanat: lost the node's change feed (%s); retrying", exc)
                self._healthy = False
                self._ring()  # meanwhile everyone polls
                failures += 1
                await asyncio.sleep(min(2.0, 0.05 * 2 ** min(failures, 6)))
                continue
            # the node's answer may have arrived together with our cancellation and
            # won (see qanat._aio): then stop here rather than hold another long poll
            raise_if_cancelled()
            failures = 0
            self._healthy = True
            ready = data.get("ready")
            jobs = data.get("jobs")
            if ready is not None and jobs is not None and tuple(jobs) == self._ready_jobs:
                self._ready = (data["seq"], bool(ready))
            else:
                self._ready = None
            records = data.get("records")
            if records is not None and read_ids is not None and data.get("ids") == list(read_ids):
                recs = signature("get_many").result(records)
                self._records = (data["seq"], frozenset(read_ids), recs)
            else:
                self._records = None
            if (data["boot"], data["seq"]) != (boot, seq):
                boot, seq = data["boot"], data["seq"]
                self._seq, self._watch_boot = seq, boot
                self._ring()

    # --- time -----------------------------------------------------------------------

    def clock(self) -> float:
        """The node's clock, estimated from the offset measured on its answers."""
        return self._t.clock()

    async def now(self) -> float:
        result: float = await self._call("now")
        return result

    # --- calls ----------------------------------------------------------------------

    async def _call(self, method: str, /, **args: Any) -> Any:
        _, data = await self._t.request("POST", f"/call/{method}", args)
        return signature(method).result(data["result"])

    async def _report(self, name: str, execution_id: str | None, **args: Any) -> Any:
        if execution_id is not None:
            args["execution_id"] = execution_id
            lease = self._leases.get(execution_id)
            if lease is not None:
                args["lease"] = lease
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((name, args, fut))
        if self._drain is None or self._drain.done():
            self._drain = asyncio.get_running_loop().create_task(self._send_reports())
        return await fut

    async def _send_reports(self) -> None:
        cap = BATCH
        while self._pending:
            batch, self._pending = self._pending[:cap], self._pending[cap:]
            items = [{"op": name, "args": args} for name, args, _ in batch]
            try:
                _, data = await self._t.request("POST", "/report", {"items": items})
            except PayloadTooLarge as exc:
                if len(batch) > 1:  # too much at once: again in halves, in the same order
                    cap = len(batch) // 2
                    self._pending[:0] = batch
                    continue
                _fail(batch, exc)
                continue
            except BaseException as exc:
                _fail(batch, exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            cap = BATCH
            for (name, _, fut), item in zip(batch, data["results"], strict=True):
                if fut.done():
                    continue
                if "error" in item:
                    fut.set_exception(self._t.item_error(item))
                else:
                    fut.set_result(signature(name).result(item["result"]))

    def _forget(self, execution_id: str) -> None:
        self._leases.pop(execution_id, None)

    # --- queue ----------------------------------------------------------------------

    async def enqueue(self, records: Sequence[ExecutionRecord]) -> list[ExecutionRecord]:
        _, data = await self._t.request("POST", "/call/enqueue", {"records": records})
        self._leases.update(data.get("leases", {}))
        result: list[ExecutionRecord] = signature("enqueue").result(data["result"])
        return result

    async def claim(
        self, owner: str, jobs: Sequence[str], limit: int, lease: float, at: float | None = None
    ) -> list[ExecutionRecord]:
        body = {"owner": owner, "jobs": jobs, "limit": limit, "lease": lease, "at": at}
        _, data = await self._t.request("POST", "/claim", body)
        self._leases.update(data["leases"])
        self.next_wake = data["next_wake"]
        result: list[ExecutionRecord] = signature("claim").result(data["result"])
        return result

    async def has_ready(self, jobs: Sequence[str], at: float) -> bool:
        key = tuple(jobs)
        cached = self._ready
        if self._healthy and key == self._ready_jobs and cached is not None:
            if cached[0] == self._seq and abs(at - self.clock()) < 0.5:
                # the node's answer for the latest change: nothing committed since
                return cached[1]
        self._ready_jobs = key
        result: bool = await self._call("has_ready", jobs=jobs, at=at)
        return result

    async def renew(
        self, owner: str, ids: Sequence[str], lease: float, at: float | None = None
    ) -> dict[str, str]:
        body = {"owner": owner, "ids": ids, "lease": lease, "at": at}
        _, data = await self._t.request("POST", "/heartbeat", body)
        stops: dict[str, str] = data["result"]
        for ident, why in stops.items():
            if why == "lost":
                self._forget(ident)
        return stops

    async def checkpoint(self, execution_id: str, owner: str, cp: Checkpoint) -> str | None:
        result: str | None = await self._report("checkpoint", execution_id, owner=owner, cp=cp)
        return result

    async def finish(self, execution_id: str, owner: str, fin: Finish) -> bool:
        result: bool = await self._report("finish", execution_id, owner=owner, fin=fin)
        self._forget(execution_id)
        return result

    async def suspend(
        self, execution_id: str, owner: str, status: str, available_at: float | None
    ) -> bool:
        result: bool = await self._report(
            "suspend", execution_id, owner=owner, status=status, available_at=available_at
        )
        self._forget(execution_id)
        return result

    async def mark(self, execution_id: str, owner: str, status: str) -> bool:
        result: bool = await self._report("mark", execution_id, owner=owner, status=status)
        return result

    async def release(self, owner: str, ids: Sequence[str]) -> None:
        await self._report("release", None, owner=owner, ids=ids)
        for ident in ids:
            self._forget(ident)

    async def enter_step(self, execution_id: str, owner: str, key: str) -> bool:
        result: bool = await self._report("enter_step", execution_id, owner=owner, key=key)
        return result

    # --- flow control ---------------------------------------------------------------

    async def refill(self, at: float | None = None) -> int:
        result: int = await self._call("refill", at=at)
        return result

    async def acquire_step(
        self, name: str, holder: str, owner: str, limit: int, lease: float, at: float | None = None
    ) -> bool:
        result: bool = await self._call(
            "acquire_step", name=name, holder=holder, owner=owner, limit=limit, lease=lease, at=at
        )
        return result

    async def release_step(self, name: str, holder: str) -> None:
        await self._call("release_step", name=name, holder=holder)

    # --- control --------------------------------------------------------------------

    async def cancel(self, ids: Sequence[str], reason: str | None) -> list[ExecutionRecord]:
        result: list[ExecutionRecord] = await self._call("cancel", ids=ids, reason=reason)
        return result

    async def pause(self, execution_id: str) -> str | None:
        result: str | None = await self._call("pause", execution_id=execution_id)
        return result

    async def resume(self, execution_id: str) -> str | None:
        result: str | None = await self._call("resume", execution_id=execution_id)
        return result

    async def restart(self, execution_id: str, at: float) -> ExecutionRecord | None:
        result: ExecutionRecord | None = await self._call(
            "restart", execution_id=execution_id, at=at
        )
        return result

    async def pause_job(self, job: str, paused: bool) -> bool:
        result: bool = await self._call("pause_job", job=job, paused=paused)
        return result

    async def paused_jobs(self) -> set[str]:
        result: set[str] = await self._call("paused_jobs")
        return result

    async def wake(self, ids: Sequence[str], at: float) -> None:
        await self._call("wake", ids=ids, at=at)

    # --- reading --------------------------------------------------------------------

    async def get(self, execution_id: str) -> ExecutionRecord | None:
        result: ExecutionRecord | None = await self._call("get", execution_id=execution_id)
        return result

    async def get_many(self, ids: Sequence[str], *, payloads: bool = True) -> list[ExecutionRecord]:
        if payloads:
            cached = self._records
            if self._healthy and cached is not None and cached[0] == self._seq:
                if cached[1].issuperset(ids):
                    # the node's answer for the latest change: nothing committed since
                    wanted = set(ids)
                    return [r for r in cached[2] if r.id in wanted]
            if 0 < len(ids) <= WATCH_IDS and all(_ID.fullmatch(i) for i in ids):
                self._read_ids = key = tuple(ids)
                _, data = await self._t.request("POST", "/call/get_many", {"ids": ids})
                recs: list[ExecutionRecord] = signature("get_many").result(data["result"])
                seq = data.get("seq")
                if isinstance(seq, int) and data.get("boot") == self._watch_boot and self._healthy:
                    # read at the node's change ``seq`` or later: as good as the long
                    # poll's records for that change (a later one replaces them)
                    if self._records is None or self._records[0] <= seq:
                        self._records = (seq, frozenset(key), recs)
                return recs
        result: list[ExecutionRecord] = await self._call("get_many", ids=ids, payloads=payloads)
        return result

    async def query(self, flt: ExecutionFilter, limit: int, cursor: str | None) -> Page:
        result: Page = await self._call("query", flt=flt, limit=limit, cursor=cursor)
        return result

    async def find_cached(self, job: str, input: str, since: float) -> ExecutionRecord | None:
        result: ExecutionRecord | None = await self._call(
            "find_cached", job=job, input=input, since=since
        )
        return result

    async def steps(self, execution_id: str) -> list[StepRecord]:
        result: list[StepRecord] = await self._call("steps", execution_id=execution_id)
        return result

    async def stats(self) -> Stats:
        result: Stats = await self._call("stats")
        return result

    async def count(self, flt: ExecutionFilter) -> int:
        result: int = await self._call("count", flt=flt)
        return result

    async def status_counts(self) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = await self._call("status_counts")
        return result

    async def worker_list(self) -> list[WorkerRecord]:
        result: list[WorkerRecord] = await self._call("worker_list")
        return result

    async def open_waiters(self, pipe: str | None, limit: int) -> list[Waiter]:
        result: list[Waiter] = await self._call("open_waiters", pipe=pipe, limit=limit)
        return result

    # --- progress and logs ----------------------------------------------------------

    async def set_progress(self, execution_id: str, owner: str | None, progress: str) -> bool:
        result: bool = await self._report(
            "set_progress", execution_id, owner=owner, progress=progress
        )
        return result

    async def append_logs(self, owner: str | None, logs: Sequence[LogRecord]) -> int:
        result: int = await self._report("append_logs", None, owner=owner, logs=logs)
        return result

    async def logs(self, execution_id: str) -> list[LogRecord]:
        result: list[LogRecord] = await self._call("logs", execution_id=execution_id)
        return result

    # --- housekeeping ---------------------------------------------------------------

    async def register_worker(self, worker_id: str, host: str, pid: int, at: float) -> None:
        body = {"worker_id": worker_id, "host": host, "pid": pid, "at": at, "protocol": PROTOCOL}
        await self._t.request("POST", "/register", body)

    async def unregister_worker(self, worker_id: str) -> None:
        await self._call("unregister_worker", worker_id=worker_id)

    async def workers(self, host: str) -> list[tuple[str, int]]:
        result: list[Any] = await self._call("workers", host=host)
        return [(str(w), int(p)) for w, p in result]

    async def expire_owner(self, owner: str, at: float | None = None) -> int:
        result: int = await self._call("expire_owner", owner=owner, at=at)
        return result

    async def purge(self, status: str, before: float | None, keep: int | None) -> int:
        result: int = await self._call("purge", status=status, before=before, keep=keep)
        return result

    # --- events ---------------------------------------------------------------------

    async def send(
        self,
        event: EventRecord,
        executions: Sequence[ExecutionRecord],
        failures: Sequence[TriggerFailure],
    ) -> EventRecord:
        result: EventRecord = await self._call(
            "send", event=event, executions=executions, failures=failures
        )
        return result

    async def events(
        self, pipe: str | None, since: float | None, limit: int, cursor: str | None
    ) -> EventPage:
        result: EventPage = await self._call(
            "events", pipe=pipe, since=since, limit=limit, cursor=cursor
        )
        return result

    async def trigger_failures(self, source: str) -> list[TriggerFailure]:
        result: list[TriggerFailure] = await self._call("trigger_failures", source=source)
        return result

    # --- waiting --------------------------------------------------------------------

    async def wait(
        self,
        execution_id: str,
        owner: str,
        waiter: Waiter,
        pokes: int | None,
        at: float | None = None,
    ) -> WaitState:
        result: WaitState = await self._report(
            "wait", execution_id, owner=owner, waiter=waiter, pokes=pokes, at=at
        )
        if result.suspended:
            self._forget(execution_id)
        return result

    async def end_wait(self, execution_id: str, owner: str, cp: Checkpoint) -> str | None:
        result: str | None = await self._report("end_wait", execution_id, owner=owner, cp=cp)
        return result

    async def waiter(self, execution_id: str, key: str) -> Waiter | None:
        result: Waiter | None = await self._call("waiter", execution_id=execution_id, key=key)
        return result

    async def awaited(self, prefix: str) -> set[str]:
        result: set[str] = await self._call("awaited", prefix=prefix)
        return result

    async def purge_events(self, before: float | None, keep: int | None) -> int:
        result: int = await self._call("purge_events", before=before, keep=keep)
        return result


def _fail(batch: list[tuple[str, dict[str, Any], asyncio.Future[Any]]], exc: BaseException) -> None:
    for _, _, fut in batch:
        if not fut.done():
            fut.set_exception(exc)


__all__ = ["HttpStorage"]
