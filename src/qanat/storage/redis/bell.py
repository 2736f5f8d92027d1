"""Wake, don't poll: every write script appends to a one-entry stream (``XADD
{prefix}:bell MAXLEN 1``); a listener blocks in ``XREAD BLOCK`` on its own connection
and calls the ``listen()`` callbacks when an entry newer than the last it saw appears.

Every listener sees every entry (a stream is read, not popped), and the read starts
from the last id seen, so a reconnect after a server restart or failover resumes where
it was (a restart with AOF keeps the stream; without it the stream is new and ``$``
is read again). After each (re)connection the callbacks are called once, since
something may have been missed meanwhile. It is a hint: the engine still polls
``changed()`` now and then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions as rexc

log = logging.getLogger("qanat")

#: How long one XREAD blocks (milliseconds) before it is made again.
BLOCK_MS = 2000
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 2.0


class Bell:
    """The wake-up listener of one ``RedisStorage`` (one task, one connection)."""

    def __init__(self, connect: Callable[[], aioredis.Redis], stream: str) -> None:
        self._connect = connect
        self.stream = stream
        self._callbacks: tuple[Callable[[], None], ...] = ()
        self._task: asyncio.Task[None] | None = None
        #: entries heard so far (and reconnections, which may have missed some)
        self.heard = 0
        #: whether the listening connection is up (else storage must ask the server)
        self.listening = False
        #: the client of the blocking read, so ``close`` can cut its connection
        self._client: aioredis.Redis | None = None

    def listen(self, callback: Callable[[], None]) -> Callable[[], None]:
        self._callbacks = (*self._callbacks, callback)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._main())

        def stop() -> None:
            self._callbacks = tuple(c for c in self._callbacks if c is not callback)

        return stop

    def _call(self) -> None:
        self.heard += 1
        loop = asyncio.get_running_loop()
        for callback in self._callbacks:
            loop.call_soon(callback)  # never inside this task: a callback may cancel it

    async def _main(self) -> None:
        last = "$"
        backoff = BACKOFF_FIRST
        while True:
            client = self._client = self._connect()
            try:
                if last == "$":  # start from the newest entry, whatever it is
                    newest: Any = await client.xrevrange(self.stream, count=1)
                    last = str(newest[0][0]) if newest else "0-0"
                self.listening = True
                self._call()  # (re)connected: an entry may have been missed
                backoff = BACKOFF_FIRST
                while True:
                    got: Any = await client.xread({self.stream: last}, block=BLOCK_MS, count=1)
                    if got:
                        last = str(got[0][1][-1][0])
                        self._call()
            except asyncio.CancelledError:
                raise
            except (rexc.ConnectionError, rexc.TimeoutError, rexc.ResponseError, OSError) as exc:
                log.warning(
                    "qanat: Redis wake-up connection lost (%s); reconnecting in %.2fs",
                    exc,
                    backoff,
                )
            finally:
                self.listening = False
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.aclose(), 1.0)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # A cancelled XREAD BLOCK can stay parked on its socket (seen: about one stop
            # in eight with three workers; asyncio.run then waits for the task forever):
            # cutting the connection ends the read, so the cancellation goes through.
            client = self._client
            if client is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        client.connection_pool.disconnect(inuse_connections=True), 1.0
                    )
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await asyncio.wait([task], timeout=2.0)
