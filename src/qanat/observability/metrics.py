"""Prometheus metrics (SPEC §14), with ``prometheus-client`` (``qanat[server]``).

Two kinds, measured where each is true:

* **events of this process** — counters and histograms the engine updates as its
  workers run executions (:class:`Metrics`: started, finished by status, retried, step
  and execution durations, claim latency). One set per process, shared by its queues;
  updating one is a dict look-up and a lock, on the engine's hot path only once
  :func:`enable` was called for the queue (``queue.metrics`` is None otherwise).
* **the state of storage** — executions by job and status, paused jobs and live workers,
  read with ``queue.stats()`` when ``/metrics`` is scraped and cached for
  :data:`STATE_TTL` seconds (:class:`Exposition`), so however many workers and
  scrapers there are, storage answers one count query per scrape interval each.

With ``--processes N`` the supervisor gives its children a fresh
``PROMETHEUS_MULTIPROC_DIR``: each child's counters live in memory-mapped files there,
and any child answering a scrape sums every child's (prometheus-client's multiprocess
mode), so one port shows one view.

:func:`metrics_app` is the ASGI app serving ``GET /metrics`` (mounted by ``qanat serve``
and ``qanat dashboard``, which apply their token); ``qanat worker --metrics-port``
serves the same exposition (``qanat.server.metrics_port``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any

from qanat.errors import ConfigurationError
from qanat.storage.base import STATUSES

try:
    from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.metrics_core import Metric
    from prometheus_client.multiprocess import MultiProcessCollector
    from prometheus_client.registry import Collector, CollectorRegistry
except ImportError:  # pragma: no cover - the extra is part of the dev install
    raise ConfigurationError(
        "qanat metrics need prometheus-client: pip install 'qanat[server]'"
    ) from None

if TYPE_CHECKING:
    from qanat.queue import Queue

log = logging.getLogger("qanat")

#: Where prometheus-client's multiprocess mode keeps each process's values.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Seconds a scrape reuses the storage counts read by the one before.
STATE_TTL = 2.0
#: Durations of executions: from the first claim to the end (sleeps and waits included).
EXECUTION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600, 21600, 86400)
#: Durations of step runs (all of a step's attempts).
STEP_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
#: From an execution's due time to its claim.
CLAIM_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Metrics:
    """The counters and histograms of one process (see the module's docstring).

    The engine calls the ``on_*`` methods; each caches the labelled child per job (and
    step) so that an update is one dict look-up plus prometheus-client's own lock.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.started = Counter(
            "qanat_executions_started",
            "Executions that began their first attempt, by job.",
            ["job"],
            registry=registry,
        )
        self.finished = Counter(
            "qanat_executions_finished",
            "Executions that ended, by job and final status (completed, failed, cancelled).",
            ["job", "status"],
            registry=registry,
        )
        self.retried = Counter(
            "qanat_executions_retried",
            "Failed attempts that were scheduled to run again, by job.",
            ["job"],
            registry=registry,
        )
        self.execution_seconds = Histogram(
            "qanat_execution_duration_seconds",
            "From an execution's first claim to its end (sleeps and waits included), by "
            "job and final status.",
            ["job", "status"],
            registry=registry,
            buckets=EXECUTION_BUCKETS,
        )
        self.step_seconds = Histogram(
            "qanat_step_duration_seconds",
            "One run of a run/thread step (all of its attempts), by job and step name.",
            ["job", "step"],
            registry=registry,
            buckets=STEP_BUCKETS,
        )
        self.claim_seconds = Histogram(
            "qanat_claim_latency_seconds",
            "From an execution's due time to its first claim, both on the storage's clock, by job.",
            ["job"],
            registry=registry,
            buckets=CLAIM_BUCKETS,
        )
        self._by_job: dict[str, tuple[Any, Any, Any]] = {}
        self._by_status: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._by_step: dict[tuple[str, str], Any] = {}

    def _job(self, job: str) -> tuple[Any, Any, Any]:
        got = self._by_job.get(job)
        if got is None:
            got = self._by_job[job] = (
                self.started.labels(job),
                self.retried.labels(job),
                self.claim_seconds.labels(job),
            )
        return got

    def on_start(self, job: str, claim_latency: float) -> None:
        """An execution's first attempt began, ``claim_latency`` seconds after it was due."""
        started, _, claim = self._job(job)
        started.inc()
        claim.observe(max(0.0, claim_latency))

    def on_retry(self, job: str) -> None:
        """A failed attempt was scheduled to run again."""
        self._job(job)[1].inc()

    def on_finish(self, job: str, status: str, seconds: float | None) -> None:
        """An execution ended with ``status``, ``seconds`` after its first claim."""
        key = (job, status)
        got = self._by_status.get(key)
        if got is None:
            got = self._by_status[key] = (
                self.finished.labels(job, status),
                self.execution_seconds.labels(job, status),
            )
        got[0].inc()
        if seconds is not None:
            got[1].observe(max(0.0, seconds))

    def on_step(self, job: str, step: str, seconds: float) -> None:
        """A run of step ``step`` ended (completed or failed for good)."""
        key = (job, step)
        child = self._by_step.get(key)
        if child is None:
            child = self._by_step[key] = self.step_seconds.labels(job, step)
        child.observe(max(0.0, seconds))


_metrics: Metrics | None = None


def process_metrics() -> Metrics:
    """This process's :class:`Metrics`, made on first use in a registry of their own (not
    prometheus-client's global one, which stays the application's)."""
    global _metrics
    if _metrics is None:
        _metrics = Metrics(CollectorRegistry(auto_describe=True))
    return _metrics


def enable(queue: Queue) -> Metrics:
    """Turn metrics on for ``queue``'s workers in this process (idempotent)."""
    if queue.metrics is None:
        queue.metrics = process_metrics()
    return queue.metrics


def multiprocess_dir() -> str | None:
    """The multiprocess directory this process writes its values to, or None."""
    return os.environ.get(MULTIPROC_ENV) or None


class Exposition:
    """The text a scrape of one queue returns: this process's (or, in multiprocess mode,
    every sibling's) counters plus the storage gauges, read at most every ``ttl`` s."""

    def __init__(self, queue: Queue, *, ttl: float = STATE_TTL) -> None:
        self.queue = queue
        self.ttl = ttl
        self.metrics = enable(queue)
        self._state: list[Metric] = []
        self._read_at: float | None = None
        self._lock = asyncio.Lock()

    async def state(self) -> list[Metric]:
        """The storage gauges, from a cache younger than ``ttl`` or read now."""
        loop = asyncio.get_running_loop()
        async with self._lock:  # concurrent scrapes share one read
            if self._read_at is None or loop.time() - self._read_at >= self.ttl:
                self._state = await self._read_state()
                self._read_at = loop.time()
            return self._state

    async def _read_state(self) -> list[Metric]:
        up = GaugeMetricFamily(
            "qanat_storage_up", "1 if the last read of the storage's counts succeeded."
        )
        try:
            stats = await self.queue.stats()
            workers = await _live_workers(self.queue)
        except Exception as exc:  # a scrape must still answer: with up 0 and the counters
            log.warning("qanat: /metrics could not read the storage's counts: %s", exc)
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        execs = GaugeMetricFamily(
            "qanat_executions",
            "Executions in storage now, by job and status.",
            labels=["job", "status"],
        )
        for job, counts in sorted(stats["by_job"].items()):
            for status in STATUSES:
                execs.add_metric([job, status], counts.get(status, 0))
        paused = GaugeMetricFamily(
            "qanat_job_paused", "1 for each job paused in storage.", labels=["job"]
        )
        for job in stats["paused_jobs"]:
            paused.add_metric([job], 1)
        out: list[Metric] = [up, execs, paused]
        if workers is not None:
            live = GaugeMetricFamily(
                "qanat_workers", "Worker processes registered in storage (every host)."
            )
            live.add_metric([], workers)
            out.append(live)
        return out

    def _registry(self, state: list[Metric]) -> CollectorRegistry:
        joined = CollectorRegistry()
        path = multiprocess_dir()
        if path is None:
            joined.register(_Fixed(self.metrics.registry.collect))
        else:  # every process's values, from their files
            MultiProcessCollector(joined, path=path)  # type: ignore[no-untyped-call]
        joined.register(_Fixed(lambda: state))
        return joined

    async def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self._registry(await self.state()))


class _Fixed(Collector):
    """A collector yielding what a function returns (another registry's metrics, the
    storage gauges of one scrape)."""

    def __init__(self, source: Callable[[], Iterable[Metric]]) -> None:
        self._source = source

    def collect(self) -> Iterable[Metric]:
        return self._source()


async def _live_workers(queue: Queue) -> int | None:
    """How many workers storage has registered, where the backend can list them."""
    lister: Callable[[], Awaitable[list[Any]]] | None = getattr(queue.storage, "worker_list", None)
    if lister is None:
        return None
    try:
        return len(await lister())
    except NotImplementedError:
        return None


#: The content type of the text exposition.
CONTENT_TYPE = CONTENT_TYPE_LATEST

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def metrics_app(queue: Queue) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """An ASGI app answering ``GET /metrics`` (and ``GET /`` when mounted at
    ``/metrics``) with the Prometheus text of ``queue``; turns metrics on for it.

    It applies no token: the server that mounts it does (``qanat serve``,
    ``qanat dashboard``). Other paths are 404, other methods 405.
    """
    expo = Exposition(queue)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        status, body, ctype = await answer(expo, scope["method"], scope.get("path", "/"))
        headers = [(b"content-type", ctype.encode()), (b"cache-control", b"no-store")]
        if status == 405:
            headers.append((b"allow", b"GET, HEAD"))
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        head = scope["method"] == "HEAD"
        await send({"type": "http.response.body", "body": b"" if head else body})

    return app


async def answer(expo: Exposition, method: str, path: str) -> tuple[int, bytes, str]:
    """(status, body, content type) of a request to a metrics endpoint; one copy of the
    routing for the ASGI app and the worker's own server."""
    if path.rstrip("/") not in ("", "/metrics"):
        return 404, b"not found: metrics are at /metrics\n", "text/plain; charset=utf-8"
    if method not in ("GET", "HEAD"):
        return 405, b"method not allowed: GET /metrics\n", "text/plain; charset=utf-8"
    return 200, await expo.render(), CONTENT_TYPE
