"""``GET /metrics``: the text a scrape returns, and :func:`metrics_app`, the ASGI app.

A scrape returns this process's counters and histograms (:mod:`.metrics`; in a
supervised child, every sibling's summed) and the **state of storage**: executions by
job and status, paused jobs and live workers, read with ``queue.stats()`` and cached for
:data:`STATE_TTL` seconds, so however many scrapers there are, storage answers one
count query per interval. Reading storage never happens per event.

:func:`metrics_app` is mounted by ``qanat serve`` and ``qanat dashboard``, which apply
their token; ``qanat worker --metrics-port`` serves the same :func:`answer`
(``qanat.server.metrics_port``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from qanat.observability.metrics import Metrics, enable
from qanat.storage.base import STATUSES

if TYPE_CHECKING:
    from qanat.queue import Queue

log = logging.getLogger("qanat")

#: Seconds a scrape reuses the storage counts read by the one before.
STATE_TTL = 2.0
#: The content type of the text exposition.
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Exposition:
    """What a scrape of one queue returns (see the module's docstring)."""

    def __init__(self, queue: Queue, *, ttl: float = STATE_TTL) -> None:
        self.queue = queue
        self.ttl = ttl
        self.metrics: Metrics = enable(queue)
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
        except Exception as exc:  # a scrape still answers: with up 0 and the counters
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

    async def render(self) -> bytes:
        """The Prometheus text exposition."""
        state = await self.state()
        registry = CollectorRegistry()
        registry.register(_Fixed(lambda: [*self.metrics.families(), *state]))
        return generate_latest(registry)


class _Fixed(Collector):
    """A collector yielding what a function returns."""

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


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class MetricsApp:
    """The ASGI app of :func:`metrics_app` (a class, so that Starlette's ``Route`` takes it
    as an app rather than as a request handler)."""

    def __init__(self, queue: Queue) -> None:
        self.expo = Exposition(queue)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        path, root = scope.get("path", "/"), scope.get("root_path", "")
        if root and path.startswith(root):  # mounted (Starlette keeps the full path)
            path = path[len(root) :]
        status, body, ctype = await answer(self.expo, scope["method"], path)
        headers = [(b"content-type", ctype.encode()), (b"cache-control", b"no-store")]
        if status == 405:
            headers.append((b"allow", b"GET, HEAD"))
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        head = scope["method"] == "HEAD"
        await send({"type": "http.response.body", "body": b"" if head else body})


def metrics_app(queue: Queue) -> MetricsApp:
    """An ASGI app answering ``GET /metrics`` with the Prometheus text of ``queue``;
    turns metrics on for it. In a Starlette app: ``Route("/metrics", metrics_app(q))``
    (or ``Mount("/metrics", ...)``, which redirects ``/metrics`` to ``/metrics/``).

    It applies no token: the server that mounts it does (``qanat serve``,
    ``qanat dashboard``). Other paths are 404, other methods 405.
    """
    return MetricsApp(queue)


async def answer(expo: Exposition, method: str, path: str) -> tuple[int, bytes, str]:
    """(status, body, content type) of a request to a metrics endpoint; one copy of the
    routing for the ASGI app and the worker's own server."""
    if path.rstrip("/") not in ("", "/metrics"):
        return 404, b"not found: metrics are at /metrics\n", "text/plain; charset=utf-8"
    if method not in ("GET", "HEAD"):
        return 405, b"method not allowed: GET /metrics\n", "text/plain; charset=utf-8"
    return 200, await expo.render(), CONTENT_TYPE
