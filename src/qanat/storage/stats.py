"""Run-time statistics shared by the backends."""

from __future__ import annotations

from collections.abc import Sequence


def runtime_stats(runtimes: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and 95th percentile (nearest rank) of run times, or (None, None) when empty."""
    if not runtimes:
        return None, None
    ordered = sorted(runtimes)
    rank = max(0, min(len(ordered) - 1, round(0.95 * len(ordered) + 0.5) - 1))
    return sum(ordered) / len(ordered), ordered[rank]
