"""The estimate of a storage's clock (``storage/offset.py``): the shortest round trip's
sample wins, a slow trip does not move it, and an old sample is replaced."""

from __future__ import annotations

from qanat.storage import offset
from qanat.storage.offset import ClockOffset


def test_the_shortest_trip_sets_the_offset_and_a_slow_one_does_not_move_it() -> None:
    c = ClockOffset()
    c.observe(server=1000.0005, sent=10.0, got=10.001)  # 1 ms trip: offset 990
    assert abs(c.offset - 990.0) < 1e-9
    # a 6 ms trip whose server time sat at its very start: half a trip off, ignored
    c.observe(server=1001.0, sent=11.0, got=11.006)
    assert abs(c.offset - 990.0) < 1e-9
    # a trip nearly as short is taken (clocks drift; fresher is better)
    c.observe(server=1002.0012, sent=12.0, got=12.0012)
    assert abs(c.offset - 990.0006) < 1e-9


def test_an_old_sample_gives_way_to_a_new_one_whatever_its_trip() -> None:
    c = ClockOffset()
    c.observe(server=1000.0, sent=10.0, got=10.0)
    c.observe(
        server=1100.0 + offset.KEEP, sent=10.0 + offset.KEEP + 1, got=10.0 + offset.KEEP + 1.01
    )
    assert abs(c.offset - (1100.0 + offset.KEEP - (10.0 + offset.KEEP + 1.005))) < 1e-9
    assert abs(c.trip - 0.01) < 1e-9
