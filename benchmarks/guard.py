"""The benchmark guard: figures as ratios to baselines measured in the same run, and a
comparison of those ratios with the last recorded run (``./scripts/bench.sh --check``).

Absolute rates on a shared 2-core VM move by ±30 % between runs (fsync speed, other
tenants), so the guard never compares them. Each figure is divided by the baseline that
bounds it, measured minutes apart in the same suite:

* fsync-bound figures (one enqueue per call, sequential steps, latency) by the raw
  ``sqlite3`` one-row-per-commit loop (the paired loop run in the same process where the
  workload has one);
* CPU-bound figures (drain, concurrent steps, fan-out: batches of ~50-100 operations per
  commit, fsync is not their bound) by the raw 100-rows-per-commit loop, which is mostly
  Python and SQLite CPU;
* peak RSS is compared as is (memory does not depend on the neighbours).

A ratio that got worse than the last recorded one by more than its noise band is a
regression. The bands come from repeated runs of the whole suite on this VM while other
work ran (benchmarks/RESULTS.md, "Benchmark guard"): a ratio's run-to-run spread there was
up to ~25 % for the fsync-bound ratios and ~30 % for the CPU-bound ones, so the band is
set just above it. A smaller real regression needs an A/B of its own (alternating runs
of both trees, as RESULTS.md does), which the guard cannot replace.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Results = dict[str, Any]


def _get(results: Results, workload: str, metric: str) -> float | None:
    value = results.get(workload, {}).get(metric)
    return float(value) if isinstance(value, int | float) and value == value else None


def _raw1(results: Results, workload: str) -> float | None:
    """The one-row loop paired with ``workload`` (same process), else the suite's."""
    return _get(results, workload, "paired_raw_per_s") or _get(results, "raw", "one_row_per_s")


def _raw100(results: Results) -> float | None:
    return _get(results, "raw", "hundred_rows_per_s")


@dataclass(frozen=True)
class Ratio:
    """One guarded figure: ``value(results)``, and whether higher is better."""

    name: str
    label: str
    value: Callable[[Results], float | None]
    higher: bool
    band: float  # the relative change beyond which it is a regression


def _per(workload: str, metric: str, base: Callable[[Results], float | None]) -> Any:
    def f(r: Results) -> float | None:
        v, b = _get(r, workload, metric), base(r)
        return None if v is None or not b else v / b

    return f


def _commits(metric: str) -> Any:
    """Latency in commit times of the raw loop (ms * commits/s / 1000)."""

    def f(r: Results) -> float | None:
        v, b = _get(r, "latency", metric), _get(r, "raw", "one_row_per_s")
        return None if v is None or not b else v * b / 1000

    return f


#: A workload's median run with more CPU than this used by other processes is flagged:
#: under such load fsync slows down several-fold and the fsync-bound ratios drift.
BUSY_CPU_S = 2.0
FSYNC_BAND = 0.30
CPU_BAND = 0.35

RATIOS: list[Ratio] = [
    Ratio(
        "enqueue/raw1",
        "enqueue per call ÷ raw 1-row loop",
        _per("enqueue", "per_s", lambda r: _raw1(r, "enqueue")),
        True,
        FSYNC_BAND,
    ),
    Ratio(
        "steps_seq/raw1",
        "sequential steps ÷ raw 1-row loop",
        _per("steps", "sequential_per_s", lambda r: _raw1(r, "steps")),
        True,
        FSYNC_BAND,
    ),
    Ratio(
        "latency_p50/commit",
        "latency p50 in raw commit times",
        _commits("p50_ms"),
        False,
        FSYNC_BAND,
    ),
    Ratio("latency_p95/commit", "latency p95 in raw commit times", _commits("p95_ms"), False, 0.40),
    Ratio(
        "steps_conc/raw100",
        "concurrent steps ÷ raw 100-row loop",
        _per("steps", "concurrent_per_s", _raw100),
        True,
        CPU_BAND,
    ),
    Ratio(
        "fanout/raw100",
        "fan-out children ÷ raw 100-row loop",
        _per("fanout", "children_per_s", _raw100),
        True,
        CPU_BAND,
    ),
    Ratio(
        "drain_steady/raw100",
        "drain steady ÷ raw 100-row loop",
        _per("drain", "steady_per_s", _raw100),
        True,
        CPU_BAND,
    ),
    Ratio(
        "drain_startup/raw100",
        "drain incl. start-up ÷ raw 100-row loop",
        _per("drain", "with_startup_per_s", _raw100),
        True,
        CPU_BAND,
    ),
    Ratio(
        "drain_rss_mb",
        "drain worker peak RSS (MB)",
        lambda r: _get(r, "drain", "peak_rss_mb"),
        False,
        0.15,
    ),
]


def ratios(results: Results) -> dict[str, float]:
    """Every guarded ratio the results hold."""
    out = {}
    for ratio in RATIOS:
        v = ratio.value(results)
        if v is not None:
            out[ratio.name] = v
    return out


def last_recorded(folder: Path, sizes: dict[str, int]) -> Path | None:
    """The newest ``<date>.json`` in ``folder`` (names sort by time) measured with the
    same sizes for the workloads both ran (a ``--quick`` run is no baseline for a full one)."""
    for path in sorted(folder.glob("*.json"), reverse=True):
        old = load(path).get("sizes", {})
        if all(old.get(w, n) == n for w, n in sizes.items()):
            return path
    return None


def compare(new: Results, old: Results) -> tuple[str, list[str]]:
    """A table of each ratio, last recorded against now, and the regressions in it."""
    a, b = ratios(old), ratios(new)
    rows = [("ratio", "recorded", "now", "change", "band", "")]
    bad: list[str] = []
    for ratio in RATIOS:
        if ratio.name not in a or ratio.name not in b:
            continue
        was, now = a[ratio.name], b[ratio.name]
        # > 0: better, < 0: worse, relative to the recorded figure
        change = (now - was) / was if ratio.higher else (was - now) / was
        worse = change < -ratio.band
        if worse:
            bad.append(ratio.name)
        rows.append(
            (
                ratio.label,
                f"{was:.4g}",
                f"{now:.4g}",
                f"{change:+.0%}",
                f"±{ratio.band:.0%}",
                "REGRESSION" if worse else "",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines), bad


def load(path: Path) -> Results:
    data: Results = json.loads(path.read_text())
    return data
