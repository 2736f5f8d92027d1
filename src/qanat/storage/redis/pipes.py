"""The events and waiters of ``RedisStorage``: ``send``, ``events`` and the
``pipe.wait_for`` operations (a mixin; ``RedisStorage`` supplies ``_run``).

Dict waiters are found by index, ``(pipe, shape, value)``: a send projects its data on
each shape waited on for its pipe (``qanat.storage.matching``, here in Python, so the
match is the same canonical JSON as on every backend) and the script looks the
waiters up. The script checks that the caller projected on every shape in use; if a
waiter with a new shape came in between, it writes nothing and names the shapes, and
the call is made again with them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from qanat.storage.base import (
    Checkpoint,
    EventPage,
    EventRecord,
    ExecutionRecord,
    TriggerFailure,
    Waiter,
    WaitState,
    decode_cursor,
    encode_cursor,
)
from qanat.storage.matching import project
from qanat.storage.redis import codec

#: Events deleted by one purge script (the caller loops).
PURGE_EVENTS_BATCH = 500


class RedisPipes:
    """Events and waiters in Redis."""

    if TYPE_CHECKING:

        async def _run(self, name: str, args: list[Any]) -> Any:
            raise NotImplementedError

        @staticmethod
        def _records_args(records: Sequence[ExecutionRecord]) -> list[str]:
            raise NotImplementedError

        @staticmethod
        def _checkpoint_args(execution_id: str, owner: str, cp: Checkpoint) -> list[str]:
            raise NotImplementedError

    @staticmethod
    def _projections(data: str | None, shapes: list[str] | None) -> list[str]:
        """The (shape, value) pairs of ``data`` on ``shapes`` as arguments ("" value: a
        path is missing)."""
        if data is None or not shapes:
            return ["0"]
        parsed = json.loads(data)
        out = [str(len(shapes))]
        for shape in shapes:
            out += (shape, project(parsed, shape) or "")
        return out

    @staticmethod
    def _failures_args(failures: Sequence[TriggerFailure]) -> list[str]:
        out = [str(len(failures))]
        for f in failures:
            out += (f.source, codec.failure_json(f), repr(float(f.at)))
        return out

    @staticmethod
    def _event(reply: list[Any]) -> EventRecord:
        ident, pipe, data, sent_at, source, execs, woke, failures = reply
        return EventRecord(
            ident, pipe, data, float(sent_at), codec.unopt(source), json.loads(execs),
            [codec.failure(t) for t in failures], json.loads(woke),
        )  # fmt: skip

    async def send(
        self,
        event: EventRecord,
        executions: Sequence[ExecutionRecord],
        failures: Sequence[TriggerFailure],
    ) -> EventRecord:
        shapes: list[str] | None = None
        while True:
            args = [event.id, event.pipe, event.data, repr(float(event.sent_at))]
            args += [codec.opt(event.source), *self._projections(event.data, shapes)]
            args += self._records_args(executions)
            args += self._failures_args(failures)
            reply = await self._run("send", args)
            if reply[0] == "need":  # waiters on shapes not projected yet: nothing written
                shapes = reply[1:]
                continue
            return self._event(reply[1])

    async def events(
        self, pipe: str | None, since: float | None, limit: int, cursor: str | None
    ) -> EventPage:
        at, ident = decode_cursor(cursor) if cursor is not None else (None, None)
        args = [codec.opt(pipe), codec.opt(since), str(max(limit, 0)), codec.opt(at)]
        reply = await self._run("events", [*args, codec.opt(ident)])
        nxt = None
        if reply[0]:
            c_at, _, c_id = reply[0].partition("|")
            nxt = encode_cursor(float(c_at), c_id)
        return EventPage([self._event(r) for r in reply[1:]], nxt)

    async def trigger_failures(self, source: str) -> list[TriggerFailure]:
        return [codec.failure(t) for t in await self._run("trigger_failures", [source])]

    @staticmethod
    def _waiter(execution_id: str, key: str, flat: list[str]) -> Waiter:
        w: Waiter = codec.WAITERS.decode([*flat, "execution_id", execution_id, "key", key])
        return w

    async def wait(
        self,
        execution_id: str,
        owner: str,
        waiter: Waiter,
        pokes: int | None,
        at: float | None = None,
    ) -> WaitState:
        args = [execution_id, owner, waiter.key, waiter.pipe, codec.opt(waiter.shape),
                codec.opt(waiter.value), repr(float(waiter.since)), codec.opt(waiter.deadline),
                codec.opt(None if pokes is None else str(pokes)), codec.opt(at)]  # fmt: skip
        reply = await self._run("wait", args)
        why = reply[0] or None
        if len(reply) < 3:
            return WaitState(why, None, False)
        return WaitState(why, self._waiter(execution_id, waiter.key, reply[2]), reply[1] == "1")

    async def end_wait(self, execution_id: str, owner: str, cp: Checkpoint) -> str | None:
        why: str | None = await self._run(
            "end_wait", self._checkpoint_args(execution_id, owner, cp)
        )
        return why

    async def waiter(self, execution_id: str, key: str) -> Waiter | None:
        flat = await self._run("waiter", [execution_id, key])
        return self._waiter(execution_id, key, flat) if flat else None

    async def open_waiters(self, pipe: str | None, limit: int) -> list[Waiter]:
        flat = await self._run("open_waiters", [pipe or ""])
        found = [self._waiter(flat[i], flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3)]
        found = [w for w in found if w.event_id is None]
        found.sort(key=lambda w: w.since)
        return found[: max(limit, 0)]

    async def awaited(self, prefix: str) -> set[str]:
        return set(await self._run("awaited", [prefix]))

    async def purge_events(self, before: float | None, keep: int | None) -> int:
        total = 0
        while True:
            args = [codec.opt(before), codec.opt(keep), str(PURGE_EVENTS_BATCH)]
            n: int = await self._run("purge_events", args)
            total += n
            if n < PURGE_EVENTS_BATCH:
                return total
