"""This host's offset to a storage's clock, for local timers (``Storage.clock``).

Each answer that carries the server's time is a sample: the server read its clock
somewhere inside the round trip, so ``server - (sent + got) / 2`` is off by half the
trip at most. A loaded machine's trips vary a lot (a claim that waited for the server
may take milliseconds), and taking every sample made two processes' estimates of the
same server clock differ by that much: enough that a worker asked "is anything due?"
about an execution another process had just enqueued (its due time that process's
estimate) and heard "not yet". So the estimate keeps the sample of the shortest trip,
and takes a new one when it is nearly as short or when the kept one is older than
``KEEP`` (clocks drift).
"""

from __future__ import annotations

import time

#: Seconds a sample is kept before any newer one replaces it.
KEEP = 10.0
#: A sample whose trip is at most this many times the kept one's replaces it at once.
NEARLY = 1.5


class ClockOffset:
    """The server's clock minus this host's, estimated from round trips."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.trip = float("inf")
        self._at = float("-inf")

    def clock(self) -> float:
        """The server's clock now, as estimated here."""
        return time.time() + self.offset

    def observe(self, server: float, sent: float, got: float | None = None) -> None:
        """A sample: the server said ``server`` during a trip from ``sent`` to ``got``
        (this host's ``time.time()``; ``got`` defaults to now)."""
        got = time.time() if got is None else got
        trip = max(0.0, got - sent)
        stale = got - self._at > KEEP
        if stale or trip <= self.trip * NEARLY:
            self.trip = trip if stale else min(self.trip, trip)
            self.offset = server - (sent + got) / 2
            self._at = got
