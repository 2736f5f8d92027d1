"""Prometheus metrics of what this process's workers do (SPEC §14).

:class:`Metrics` holds the counters and histograms the engine updates as executions
run: started, finished by status, retried, execution and step durations, claim
latency. They are plain numbers in dicts: an update is a dict look-up, an integer
increment and, for a histogram, a ``bisect`` over its bounds (about a microsecond, a
tenth of what prometheus-client's own metric objects cost with their locks, measured
in ``benchmarks/RESULTS.md``). They become Prometheus metric families only when
``/metrics`` is scraped (:meth:`Metrics.families`).

Updates happen on the worker's event loop thread only (the runner and ``run`` steps),
so they need no lock. Nothing is updated while ``queue.metrics`` is None: metrics are
turned on by :func:`enable` (``metrics_app`` and ``--metrics-port`` call it).

With ``--processes N`` each child writes a snapshot of its numbers to a file of its own
in ``$QANAT_METRICS_DIR`` (a fresh directory the supervisor made) every
:data:`FLUSH_EVERY` seconds and at exit, and whichever child answers a scrape sums
every file: one port, one view. A dead child's file stays, so the counters never go
down; its replacement writes a file of its own.

The gauges read from storage at scrape time, and the ASGI app, are in
:mod:`qanat.observability.exposition`.
"""

from __future__ import annotations

import bisect
import json
import os
import secrets
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from qanat.errors import ConfigurationError

try:
    from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
    from prometheus_client.metrics_core import Metric
except ImportError:  # pragma: no cover - the extra is part of the dev install
    raise ConfigurationError(
        "qanat metrics need prometheus-client: pip install 'qanat[server]'"
    ) from None

if TYPE_CHECKING:
    from qanat.queue import Queue

#: The directory the children of one supervisor write their snapshots to.
DIR_ENV = "QANAT_METRICS_DIR"
#: Seconds between two snapshots of a supervised child.
FLUSH_EVERY = 1.0
#: Durations of executions: from the first claim to the end (sleeps and waits included).
EXECUTION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600, 21600, 86400)
#: Durations of step runs (all of a step's attempts).
STEP_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
#: From an execution's due time to its claim.
CLAIM_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

#: name: (type, help, label names, histogram bounds); the order of the exposition
SERIES: dict[str, tuple[str, str, tuple[str, ...], tuple[float, ...]]] = {
    "qanat_executions_started": (
        "counter",
        "Executions that began their first attempt, by job.",
        ("job",),
        (),
    ),
    "qanat_executions_finished": (
        "counter",
        "Executions that ended, by job and final status (completed, failed, cancelled).",
        ("job", "status"),
        (),
    ),
    "qanat_executions_retried": (
        "counter",
        "Failed attempts that were scheduled to run again, by job.",
        ("job",),
        (),
    ),
    "qanat_execution_duration_seconds": (
        "histogram",
        "From an execution's first claim to its end (sleeps and waits included), by job "
        "and final status.",
        ("job", "status"),
        EXECUTION_BUCKETS,
    ),
    "qanat_step_duration_seconds": (
        "histogram",
        "One run of a run/thread step (all of its attempts), by job and step name.",
        ("job", "step"),
        STEP_BUCKETS,
    ),
    "qanat_claim_latency_seconds": (
        "histogram",
        "From an execution's due time to its first claim, both on the storage's clock, by job.",
        ("job",),
        CLAIM_BUCKETS,
    ),
}

#: A counter's value, or a histogram's [count per bucket (the last is +Inf)..., sum].
Values = dict[str, dict[tuple[str, ...], Any]]


class Metrics:
    """The counters and histograms of one process (see the module's docstring)."""

    def __init__(self) -> None:
        self.values: Values = {name: {} for name in SERIES}
        self._started = self.values["qanat_executions_started"]
        self._finished = self.values["qanat_executions_finished"]
        self._retried = self.values["qanat_executions_retried"]
        self._took = self.values["qanat_execution_duration_seconds"]
        self._steps = self.values["qanat_step_duration_seconds"]
        self._claims = self.values["qanat_claim_latency_seconds"]
        self._file: str | None = None

    # --- updates (the engine's hot path) --------------------------------------------

    def on_start(self, job: str, claim_latency: float) -> None:
        """An execution's first attempt began, ``claim_latency`` seconds after it was due."""
        key = (job,)
        self._started[key] = self._started.get(key, 0) + 1
        _observe(self._claims, key, CLAIM_BUCKETS, claim_latency)

    def on_retry(self, job: str) -> None:
        """A failed attempt was scheduled to run again."""
        key = (job,)
        self._retried[key] = self._retried.get(key, 0) + 1

    def on_finish(self, job: str, status: str, seconds: float | None) -> None:
        """An execution ended with ``status``, ``seconds`` after its first claim."""
        key = (job, status)
        self._finished[key] = self._finished.get(key, 0) + 1
        if seconds is not None:
            _observe(self._took, key, EXECUTION_BUCKETS, seconds)

    def on_step(self, job: str, step: str, seconds: float) -> None:
        """A run of step ``step`` ended (completed, or failed for good)."""
        _observe(self._steps, (job, step), STEP_BUCKETS, seconds)

    # --- exposition -----------------------------------------------------------------

    def families(self) -> list[Metric]:
        """This process's values as Prometheus metric families; in a supervised child,
        every sibling's too (after writing its own snapshot)."""
        folder = os.environ.get(DIR_ENV)
        if not folder:
            return list(_families(self.values))
        self.flush()
        return list(_families(_merged(_snapshots(folder))))

    def flush(self) -> None:
        """In a supervised child, write this process's values to its file (atomically:
        a reader sees the old snapshot or the new one)."""
        folder = os.environ.get(DIR_ENV)
        if not folder:
            return
        if self._file is None:  # one file per process life: a reused pid is a new file
            self._file = os.path.join(folder, f"{os.getpid()}-{secrets.token_hex(4)}.json")
        data = {
            name: [[list(k), v] for k, v in series.items()] for name, series in self.values.items()
        }
        tmp = f"{self._file}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, separators=(",", ":"))
        os.replace(tmp, self._file)


def _observe(
    series: dict[tuple[str, ...], Any],
    key: tuple[str, ...],
    bounds: tuple[float, ...],
    value: float,
) -> None:
    if value < 0.0:  # two clocks' estimates may cross by a hair
        value = 0.0
    h = series.get(key)
    if h is None:
        h = series[key] = [0] * (len(bounds) + 1) + [0.0]
    # le semantics: the first bucket whose bound is >= the value (past the last: +Inf)
    h[bisect.bisect_left(bounds, value)] += 1
    h[-1] += value


def _snapshots(folder: str) -> Iterator[Values]:
    for entry in os.scandir(folder):
        if not entry.name.endswith(".json"):
            continue
        try:
            with open(entry.path, encoding="utf-8") as f:
                raw = json.load(f)
        except (OSError, ValueError):
            continue  # removed meanwhile, or not ours
        yield {name: {tuple(k): v for k, v in raw.get(name, [])} for name in SERIES}


def _merged(snapshots: Iterable[Values]) -> Values:
    total: Values = {name: {} for name in SERIES}
    for snap in snapshots:
        for name, series in snap.items():
            into = total[name]
            for key, v in series.items():
                if isinstance(v, list):
                    old = into.get(key)
                    into[key] = (
                        list(v) if old is None else [a + b for a, b in zip(old, v, strict=True)]
                    )
                else:
                    into[key] = into.get(key, 0) + v
    return total


def _families(values: Values) -> Iterator[Metric]:
    for name, (kind, doc, labels, bounds) in SERIES.items():
        series = values[name]
        if kind == "counter":
            c = CounterMetricFamily(name, doc, labels=labels)
            for key, n in sorted(series.items()):
                c.add_metric(list(key), n)
            yield c
            continue
        h = HistogramMetricFamily(name, doc, labels=labels)
        for key, counts in sorted(series.items()):
            running, buckets = 0, []
            for bound, n in zip((*map(_le, bounds), "+Inf"), counts[:-1], strict=True):
                running += n
                buckets.append((bound, running))
            h.add_metric(list(key), buckets, counts[-1])
        yield h


def _le(bound: float) -> str:
    return repr(float(bound))


_metrics: Metrics | None = None


def process_metrics() -> Metrics:
    """This process's :class:`Metrics` (one per process, shared by its queues)."""
    global _metrics
    if _metrics is None:
        _metrics = Metrics()
    return _metrics


def enable(queue: Queue) -> Metrics:
    """Turn metrics on for ``queue``'s workers in this process (idempotent)."""
    if queue.metrics is None:
        queue.metrics = process_metrics()
    return queue.metrics
