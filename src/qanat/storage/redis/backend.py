"""Redis storage (``redis://host:6379/0?prefix=qanat``): the whole contract in Lua.

Every contract operation is one Lua script (``lua/``, see ``scripts.py``), so each is
atomic on the server and its times come from the server's ``TIME``: a worker's clock
is never written. ``clock()`` is this host's clock corrected by the offset to the
server's, measured by the scripts that return the server's time (claim, now).
The key layout is in docs/storage.md; the wake-up stream in ``bell.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions as rexc

from qanat.errors import StorageError
from qanat.storage.base import (
    Checkpoint,
    ExecutionFilter,
    ExecutionRecord,
    Finish,
    LogRecord,
    Page,
    Stats,
    StepRecord,
    Storage,
    decode_cursor,
    encode_cursor,
)
from qanat.storage.offset import ClockOffset
from qanat.storage.records import STATUSES, WorkerRecord
from qanat.storage.redis import codec
from qanat.storage.redis.bell import Bell
from qanat.storage.redis.packing import fast_packing
from qanat.storage.redis.pipes import RedisPipes
from qanat.storage.redis.scripts import Scripts
from qanat.storage.urls import redact

log = logging.getLogger("qanat")

#: The key layout this code writes (``{prefix}:meta`` field ``layout``).
LAYOUT = 1
#: How long a reply may take before the call counts as failed (seconds).
SCRIPT_TIMEOUT = 30.0
#: Connections per storage object (besides the wake-up listener's own).
MAX_CONNECTIONS = 16
#: Finished executions deleted by one purge script (the caller loops).
PURGE_BATCH = 500


class RedisStorage(RedisPipes, Storage):
    """Storage on one Redis server (or a Cluster: all keys of a prefix in one slot)."""

    polls = False
    claims_without_asking = True

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", prefix: str = "qanat") -> None:
        if not prefix or any(c in prefix for c in "{}"):
            raise ValueError(f"invalid prefix {prefix!r}: give a non-empty name without braces")
        self.url = url
        self.prefix = prefix
        self.key = "{" + prefix + "}"
        self._scripts: Scripts | None = None
        self._clock = ClockOffset()
        self._seen_version: str | None = None
        self._seen_heard = -1
        self._bell: Bell | None = None

    # --- connection ----------------------------------------------------------------

    def _new_client(self) -> aioredis.Redis:
        # a bounded pool that waits for a free connection (many concurrent executions of
        # one process share it) instead of failing with "Too many connections"
        pool = aioredis.BlockingConnectionPool.from_url(
            self.url,
            decode_responses=True,
            socket_connect_timeout=5.0,
            # a long script (a claim parking a gate's backlog of thousands) on a busy
            # server must not meet redis-py's 5 s default and be sent again
            socket_timeout=SCRIPT_TIMEOUT,
            health_check_interval=30,
            max_connections=MAX_CONNECTIONS,
            timeout=None,
        )
        # whatever connection the URL asked for (TCP, TLS, a unix socket), packing its
        # commands with hiredis (packing.py)
        pool.connection_class = fast_packing(pool.connection_class)
        return aioredis.Redis.from_pool(pool)  # owns the pool: aclose() closes it

    def _scripts_here(self) -> Scripts:
        s = self._scripts
        if s is None or s.loop is not asyncio.get_running_loop():
            # first use, or a new event loop (a client belongs to the loop that made it)
            s = self._scripts = Scripts(self._new_client(), self.key)
        return s

    async def _run(self, name: str, args: list[Any]) -> Any:
        return await self._scripts_here().run(name, args)

    async def open(self) -> None:
        client = self._new_client()
        where = redact(self.url)
        try:
            await client.ping()
            fresh = "1"
            if not await client.exists(f"{self.key}:meta"):
                fresh = "1" if not await self._foreign_keys(client) else "0"
            self._scripts = Scripts(client, self.key)
            state, stored = await self._scripts.run("open", [str(LAYOUT), fresh])
            await self._warn_durability(client)
        except rexc.AuthenticationError as exc:
            await client.aclose()
            raise StorageError(f"Redis at {where} refused the login: {exc}") from None
        except rexc.ResponseError as exc:
            await client.aclose()
            if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
                raise StorageError(f"Redis at {where} refused the login: {exc}") from None
            raise StorageError(f"Redis at {where} failed at open: {exc}") from None
        except (rexc.ConnectionError, rexc.TimeoutError, OSError) as exc:
            await client.aclose()
            raise StorageError(f"cannot reach Redis at {where}: {exc}") from None
        if state == "foreign":
            await self.close()
            raise StorageError(
                f"the prefix {self.prefix!r} on Redis at {where} holds keys that are not "
                "qanat's; choose another ?prefix="
            )
        if state == "newer":
            await self.close()
            raise StorageError(
                f"the prefix {self.prefix!r} on Redis at {where} was written by a newer qanat "
                f"(layout {stored}; this one knows up to {LAYOUT}); upgrade qanat"
            )
        await self.now()

    async def _foreign_keys(self, client: aioredis.Redis) -> bool:
        """Whether keys of this prefix exist (at open only; bounded SCAN, never in a script)."""
        async for _ in client.scan_iter(match=f"{self.key}:*", count=1000):
            return True
        return False

    async def _warn_durability(self, client: aioredis.Redis) -> None:
        try:
            conf = await client.config_get("appendonly")
            conf.update(await client.config_get("save"))
            conf.update(await client.config_get("maxmemory-policy"))
            conf.update(await client.config_get("appendfsync"))
        except rexc.ResponseError:  # CONFIG is disabled on some managed servers
            return
        if conf.get("appendonly") != "yes" and not conf.get("save"):
            log.warning(
                "qanat: Redis at %s has persistence off (appendonly no, no save): a restart "
                "loses every execution; set appendonly yes",
                redact(self.url),
            )
        policy = conf.get("maxmemory-policy", "noeviction")
        if policy != "noeviction":
            log.warning(
                "qanat: Redis at %s has maxmemory-policy %s: it may evict qanat's keys when "
                "memory is full; set maxmemory-policy noeviction",
                redact(self.url),
                policy,
            )

    async def close(self) -> None:
        if self._bell is not None:
            await self._bell.close()
            self._bell = None
        s, self._scripts = self._scripts, None
        if s is not None and s.loop is asyncio.get_running_loop():
            await s.client.aclose()

    # --- time and change --------------------------------------------------------------

    def clock(self) -> float:
        return self._clock.clock()

    def _heard_time(self, server: str, sent: float) -> None:
        self._clock.observe(float(server), sent)

    async def now(self) -> float:
        sent = time.time()
        server = await self._run("now", [])
        self._heard_time(server, sent)
        return float(server)

    async def changed(self) -> bool:
        bell = self._bell
        if bell is not None and bell.listening:
            # the wake-up stream is read on its own connection: no round trip here
            seen, self._seen_heard = self._seen_heard, bell.heard
            return seen != bell.heard
        s = self._scripts
        if s is None or s.loop is not asyncio.get_running_loop():
            return True
        try:
            version = str(await s.client.get(f"{self.key}:ver"))
        except (rexc.ConnectionError, rexc.TimeoutError):
            return True
        before, self._seen_version = self._seen_version, version
        return before != version

    def listen(self, callback: Callable[[], None]) -> Callable[[], None] | None:
        if self._bell is None:
            self._bell = Bell(self._new_client, f"{self.key}:bell")
        return self._bell.listen(callback)

    # --- queue ------------------------------------------------------------------------

    @staticmethod
    def _records_args(records: Sequence[ExecutionRecord]) -> list[str]:
        args: list[str] = [str(len(records))]
        for r in records:
            args += codec.execution_args(r)
        return args

    async def enqueue(self, records: Sequence[ExecutionRecord]) -> list[ExecutionRecord]:
        if not records:
            return []
        reply = await self._run("enqueue", self._records_args(records))
        out: list[ExecutionRecord] = []
        for rec, entry in zip(records, reply, strict=True):
            out.append(rec.copy() if entry[0] == "new" else codec.execution(entry))
        return out

    async def claim(
        self, owner: str, jobs: Sequence[str], limit: int, lease: float, at: float | None = None
    ) -> list[ExecutionRecord]:
        sent = time.time()
        args = [owner, repr(float(lease)), codec.opt(at), str(limit), str(len(jobs)), *jobs]
        reply = await self._run("claim", args)
        self._heard_time(reply[0], sent)
        self.next_wake = float(reply[1]) if reply[1] else None
        return [codec.execution(flat) for flat in reply[2:]]

    async def has_ready(self, jobs: Sequence[str], at: float) -> bool:
        return bool(await self._run("has_ready", [repr(float(at)), str(len(jobs)), *jobs]))

    async def renew(
        self, owner: str, ids: Sequence[str], lease: float, at: float | None = None
    ) -> dict[str, str]:
        flat = await self._run("renew", [owner, repr(float(lease)), codec.opt(at), *ids])
        return dict(zip(flat[::2], flat[1::2], strict=True))

    @staticmethod
    def _checkpoint_args(execution_id: str, owner: str, cp: Checkpoint) -> list[str]:
        kids = RedisStorage._records_args(cp.children)
        return [execution_id, owner, cp.step.key, codec.step_json(cp.step), *kids]

    async def checkpoint(self, execution_id: str, owner: str, cp: Checkpoint) -> str | None:
        # concurrent checkpoints of this process share script calls (a fan-out's child
        # starts, many executions' steps); checkpoint_many answers '' for "stored"
        why: str | None = await self._scripts_here().run_batched(
            "checkpoint", self._checkpoint_args(execution_id, owner, cp)
        )
        return why or None

    async def finish(self, execution_id: str, owner: str, fin: Finish) -> bool:
        # concurrent finishes of this process share script calls (Scripts.run_batched)
        reply = await self._scripts_here().run_batched(
            "finish", self._finish_args(execution_id, owner, fin, None)
        )
        while isinstance(reply, list):  # waiters on the completion's pipe: project on them
            reply = await self._run(
                "finish", self._finish_args(execution_id, owner, fin, reply[1:])
            )
        return bool(reply)

    def _finish_args(
        self, execution_id: str, owner: str, fin: Finish, shapes: list[str] | None
    ) -> list[str]:
        done = fin.status == "completed"
        attempt = None if fin.attempt is None else str(fin.attempt)
        args = [execution_id, owner, fin.status, codec.opt(fin.output), codec.opt(fin.error),
                codec.opt(attempt), codec.opt(fin.available_at), codec.opt(fin.reason)]  # fmt: skip
        ev = fin.event if done else None
        if ev is None:
            args += ["", "", "", "", "", "0"]
        else:
            data = ev.data if shapes is not None else None
            args += [codec.opt(ev.id), ev.pipe, codec.opt(data), repr(ev.sent_at)]
            args += [codec.opt(ev.source), *self._projections(data, shapes)]
        args += self._records_args(fin.children if done else [])
        args += self._failures_args(fin.failures if done else [])
        args += self._logs_args(fin.logs)
        return args

    @staticmethod
    def _logs_args(logs: Sequence[LogRecord]) -> list[str]:
        args = [str(len(logs))]
        for line in logs:
            args += (line.execution_id, codec.log_json(line))
        return args

    async def suspend(
        self, execution_id: str, owner: str, status: str, available_at: float | None
    ) -> bool:
        args = [execution_id, owner, status, codec.opt(available_at)]
        return bool(await self._run("suspend", args))

    async def mark(self, execution_id: str, owner: str, status: str) -> bool:
        return bool(await self._run("mark", [execution_id, owner, status]))

    async def release(self, owner: str, ids: Sequence[str]) -> None:
        if ids:
            await self._run("release", [owner, *ids])

    async def enter_step(self, execution_id: str, owner: str, key: str) -> bool:
        return bool(await self._run("enter_step", [execution_id, owner, key]))

    # --- flow control -----------------------------------------------------------------

    async def refill(self, at: float | None = None) -> int:
        n: int = await self._run("refill", [codec.opt(at)])
        return n

    async def acquire_step(
        self, name: str, holder: str, owner: str, limit: int, lease: float, at: float | None = None
    ) -> bool:
        args = [name, holder, owner, str(limit), repr(float(lease)), codec.opt(at)]
        return bool(await self._run("acquire_step", args))

    async def release_step(self, name: str, holder: str) -> None:
        await self._run("release_step", [name, holder])

    # --- control ----------------------------------------------------------------------

    async def cancel(self, ids: Sequence[str], reason: str | None) -> list[ExecutionRecord]:
        if not ids:
            return []
        reply = await self._run("cancel", [codec.opt(reason), *ids])
        return [codec.execution(flat) for flat in reply]

    async def pause(self, execution_id: str) -> str | None:
        status: str | None = await self._run("pause", [execution_id])
        return status

    async def resume(self, execution_id: str) -> str | None:
        status: str | None = await self._run("resume", [execution_id])
        return status

    async def restart(self, execution_id: str, at: float) -> ExecutionRecord | None:
        flat = await self._run("restart", [execution_id, repr(float(at))])
        return codec.execution(flat) if flat else None

    async def pause_job(self, job: str, paused: bool) -> bool:
        return bool(await self._run("pause_job", [job, "1" if paused else "0"]))

    async def paused_jobs(self) -> set[str]:
        return set(await self._run("paused_jobs", []))

    async def wake(self, ids: Sequence[str], at: float) -> None:
        if ids:
            await self._run("wake", [repr(float(at)), *ids])

    # --- reading ----------------------------------------------------------------------

    async def get(self, execution_id: str) -> ExecutionRecord | None:
        flat = await self._run("get", [execution_id])
        return codec.execution(flat) if flat else None

    async def get_many(self, ids: Sequence[str], *, payloads: bool = True) -> list[ExecutionRecord]:
        if not ids:
            return []
        reply = await self._run("get_many", ["1" if payloads else "0", *ids])
        return [codec.execution(flat) for flat in reply]

    async def finished_among(self, ids: Sequence[str]) -> list[ExecutionRecord]:
        if not ids:
            return []
        return [codec.execution(flat) for flat in await self._run("finished_among", list(ids))]

    #: A search reads the other filters' pages and keeps what matches (the id, or text of
    #: the input, as SQL's ``LIKE``): Redis has no text index to ask instead.
    searches = True
    SEARCH_PAGE = 500

    async def query(self, flt: ExecutionFilter, limit: int, cursor: str | None) -> Page:
        if flt.search is not None:
            return await self._search(flt, limit, cursor)
        at, ident = decode_cursor(cursor) if cursor is not None else (None, None)
        spec = {
            name: list(v) if isinstance(v, (list, tuple, set, frozenset)) else v
            for name in flt.__slots__
            if (v := getattr(flt, name)) is not None
        }
        reply = await self._run(
            "query", [str(max(limit, 0)), codec.opt(at), codec.opt(ident), json.dumps(spec)]
        )
        items = [codec.execution(flat) for flat in reply[1:]]
        nxt = None
        if reply[0]:
            c_at, _, c_id = reply[0].partition("|")
            nxt = encode_cursor(float(c_at), c_id)
        return Page(items, nxt)

    async def _search(self, flt: ExecutionFilter, limit: int, cursor: str | None) -> Page:
        needle = flt.search or ""
        inner = ExecutionFilter(**{n: getattr(flt, n) for n in flt.__slots__ if n != "search"})
        found: list[ExecutionRecord] = []
        while True:
            page = await self.query(inner, self.SEARCH_PAGE, cursor)
            for i, r in enumerate(page.items):
                if r.id == needle or needle in r.input:
                    found.append(r)
                    if len(found) == limit:
                        more = i + 1 < len(page.items) or page.cursor is not None
                        nxt = encode_cursor(r.created_at, r.id) if more else None
                        return Page(found, nxt)
            if page.cursor is None:
                return Page(found, None)
            cursor = page.cursor

    async def find_cached(self, job: str, input: str, since: float) -> ExecutionRecord | None:
        reply = await self._run("find_cached", [job, codec.input_hash(input), repr(float(since))])
        for flat in reply:
            rec = codec.execution(flat)
            if rec.input == input:
                return rec
        return None

    async def steps(self, execution_id: str) -> list[StepRecord]:
        steps = [codec.step(t) for t in await self._run("steps", [execution_id])]
        steps.sort(key=lambda s: s.started_at)
        return steps

    async def stats(self) -> Stats:
        flat, n, p95 = await self._run("stats", [])
        counters = dict(zip(flat[::2], flat[1::2], strict=True))
        by_status = dict.fromkeys(STATUSES, 0)
        by_job: dict[str, dict[str, int]] = {}
        for name, value in counters.items():
            count = int(float(value)) if name.startswith(("s:", "js:")) else 0
            if name.startswith("s:") and count:
                by_status[name[2:]] = count
            elif name.startswith("js:") and count:
                job, _, status = name[3:].rpartition("\0")
                by_job.setdefault(job, {})[status] = count
        runs = int(n)
        mean = float(counters.get("rtsum", 0.0)) / runs if runs else None
        return Stats(
            by_status, by_job, int(counters.get("retries", 0)), mean, float(p95) if p95 else None
        )

    # --- progress and logs ------------------------------------------------------------

    async def set_progress(self, execution_id: str, owner: str | None, progress: str) -> bool:
        return bool(await self._run("set_progress", [execution_id, codec.opt(owner), progress]))

    async def append_logs(self, owner: str | None, logs: Sequence[LogRecord]) -> int:
        if not logs:
            return 0
        n: int = await self._run("append_logs", [codec.opt(owner), *self._logs_args(logs)])
        return n

    async def logs(self, execution_id: str) -> list[LogRecord]:
        return [codec.log(t) for t in await self._run("logs", [execution_id])]

    # --- housekeeping -----------------------------------------------------------------

    async def register_worker(self, worker_id: str, host: str, pid: int, at: float) -> None:
        await self._run("register_worker", [worker_id, json.dumps([host, pid, at])])

    async def unregister_worker(self, worker_id: str) -> None:
        await self._run("unregister_worker", [worker_id])

    async def workers(self, host: str) -> list[tuple[str, int]]:
        flat = await self._run("workers", [])
        out = []
        for wid, text in zip(flat[::2], flat[1::2], strict=True):
            h, pid, _ = json.loads(text)
            if h == host:
                out.append((wid, int(pid)))
        return out

    async def worker_list(self) -> list[WorkerRecord]:
        flat = await self._run("worker_list", [])
        out = []
        for i in range(0, len(flat), 4):
            host, pid, at = json.loads(flat[i + 1])
            untl = float(flat[i + 3]) if flat[i + 3] else None
            out.append(WorkerRecord(flat[i], host, int(pid), float(at), list(flat[i + 2]), untl))
        out.sort(key=lambda w: w.registered_at)
        return out

    async def expire_owner(self, owner: str, at: float | None = None) -> int:
        n: int = await self._run("expire_owner", [owner, codec.opt(at)])
        return n

    async def purge(self, status: str, before: float | None, keep: int | None) -> int:
        total = 0
        while True:
            args = [status, codec.opt(before), codec.opt(keep), str(PURGE_BATCH)]
            n: int = await self._run("purge", args)
            total += n
            if n < PURGE_BATCH:
                return total
