"""The Lua scripts of the Redis backend and the connection that runs them.

Each contract operation is one script, ``lua/<operation>.lua``; the shared helpers
(``lib.lua``, ``flow.lua``, ``ops.lua``, ``pages.lua``) are put in front of each at load
time. Scripts are registered with redis-py (``register_script``): they run by EVALSHA,
and redis-py loads one again when the server answers NOSCRIPT (after a restart or a
``SCRIPT FLUSH``). ``KEYS[1]`` is the prefix ``{name}``: every key the scripts touch
starts with it, so all of them live in one hash slot.

A call that fails because the server is unreachable is tried again with back-off for up
to ``RETRY_FOR`` seconds (a restart or a failover). Every script is safe to run twice:
records and events are stored at most once by id, a repeated worker write is refused by
the owner check or changes nothing (see docs/storage.md for the one exception, log lines).
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import cache
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions as rexc

from qanat.errors import StorageError

log = logging.getLogger("qanat")

HELPERS = ("lib", "flow", "ops", "fin", "pages")
OPERATIONS = (
    "enqueue", "claim", "has_ready", "renew", "checkpoint", "checkpoint_many", "finish",
    "finish_many", "suspend", "mark", "release", "enter_step", "refill", "acquire_step",
    "release_step", "cancel", "pause", "resume", "restart", "pause_job", "paused_jobs",
    "wake", "get", "get_many", "finished_among", "query", "find_cached", "steps", "stats",
    "set_progress", "append_logs", "logs", "register_worker", "unregister_worker", "workers",
    "worker_list", "expire_owner", "purge", "send", "events", "trigger_failures", "wait",
    "end_wait", "waiter", "awaited", "open_waiters", "purge_events", "now", "open",
)  # fmt: skip
#: At most this many calls go in one ``<name>_many`` call; the rest wait for the next.
#: Redis runs one script at a time, ~30-45 µs of its time per item here: 25 items hold
#: it for about a millisecond, so claims, other workers' calls and the next batch run in
#: between, and the first answers come back while the server still works on the rest.
#: One call of 200 (a fan-out's child starts) held it for 9 ms: fan-out 4.4-4.9k
#: children/s uncapped, 5.6-6.2k capped at 20-35; drain by 2 workers 9.3-9.6k -> 11-12k.
MAX_ITEMS = 25
#: How long a call keeps trying while the server is unreachable (seconds).
RETRY_FOR = 10.0
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 2.0
TRANSIENT = (rexc.ConnectionError, rexc.TimeoutError, rexc.BusyLoadingError)


@cache
def source(name: str) -> str:
    """The full text of operation ``name``: the helpers it names on its first line
    (``-- needs: flow ops``; ``lib`` always, in the order of ``HELPERS``), then its own
    script. Only what it needs: every call runs the helpers' definitions again (tens of
    microseconds of the server's time for all of them)."""
    folder = resources.files("qanat.storage.redis") / "lua"
    text = (folder / f"{name}.lua").read_text()
    first = text.split("\n", 1)[0]
    wanted = (
        {"lib", *first.removeprefix("-- needs:").split()}
        if first.startswith("-- needs:")
        else {"lib"}
    )
    parts = [(folder / f"{h}.lua").read_text() for h in HELPERS if h in wanted]
    parts.append(text)
    return "\n".join(parts)


class Scripts:
    """The registered scripts on one client, bound to the event loop that made it."""

    def __init__(self, client: aioredis.Redis, prefix_key: str) -> None:
        self.client = client
        self.keys = [prefix_key]
        self.loop = asyncio.get_running_loop()
        self._scripts = {name: client.register_script(source(name)) for name in OPERATIONS}
        self._batches: dict[str, Batch] = {}

    async def run_batched(self, name: str, args: list[Any]) -> Any:
        """Run operation ``name`` alone when no call of it is on its way; calls that
        arrive meanwhile go together in one call of ``<name>_many`` as soon as it is back
        (what one would return comes back to each; at most ``MAX_ITEMS`` a call, the
        rest in the calls after it). A worker finishing many executions at once then
        pays one round trip and one script call for a batch, not one each, and a lone
        call waits for nothing."""
        batch = self._batches.get(name)
        if batch is None:
            batch = self._batches[name] = Batch(self, name)
        return await batch.submit(args)

    async def run(self, name: str, args: list[Any]) -> Any:
        """Run operation ``name``; retried with back-off while the server is away."""
        script = self._scripts[name]
        deadline = time.monotonic() + RETRY_FOR
        backoff = BACKOFF_FIRST
        while True:
            try:
                return await script(keys=self.keys, args=args)
            except TRANSIENT as exc:
                if time.monotonic() + backoff > deadline:
                    raise StorageError(f"Redis unreachable for {RETRY_FOR:.0f}s: {exc}") from exc
                log.warning(
                    "qanat: Redis call %s failed (%s); retrying in %.2fs", name, exc, backoff
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
            except rexc.ResponseError as exc:
                raise StorageError(f"Redis script {name} failed: {exc}") from exc


class Batch:
    """The calls of one operation waiting for the call on its way (``Scripts.run_batched``)."""

    def __init__(self, scripts: Scripts, name: str) -> None:
        self.scripts = scripts
        self.name = name
        self.busy = False
        self.waiting: list[tuple[list[Any], asyncio.Future[Any]]] = []
        self.task: asyncio.Task[None] | None = None  # held: the loop keeps only weak refs

    async def submit(self, args: list[Any]) -> Any:
        if self.busy:
            fut: asyncio.Future[Any] = self.scripts.loop.create_future()
            self.waiting.append((args, fut))
            return await fut
        self.busy = True
        try:
            return await self.scripts.run(self.name, args)
        finally:
            self._next()

    def _next(self) -> None:
        if self.waiting:
            self.task = self.scripts.loop.create_task(
                self._send_waiting(), name=f"qanat-redis-{self.name}"
            )
        else:
            self.busy = False
            self.task = None

    async def _send_waiting(self) -> None:
        batch, self.waiting = self.waiting[:MAX_ITEMS], self.waiting[MAX_ITEMS:]
        try:
            if len(batch) == 1:
                replies = [await self.scripts.run(self.name, batch[0][0])]
            else:
                flat: list[Any] = []
                for args, _ in batch:
                    flat.append(str(len(args)))
                    flat.extend(args)
                replies = await self.scripts.run(self.name + "_many", flat)
        except BaseException as exc:  # each caller gets what happened to its call
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for (_, fut), reply in zip(batch, replies, strict=True):
                if not fut.done():
                    fut.set_result(reply)
        finally:
            self._next()
