"""Metrics and traces (SPEC §14).

* ``metrics``: the counters and histograms the engine updates once ``queue.metrics``
  is on (prometheus-client, imported only by what serves ``/metrics``);
* ``exposition``: what ``GET /metrics`` returns (those plus gauges read from storage)
  and ``metrics_app``, the ASGI app;
* ``tracing``: OpenTelemetry spans per attempt and step, and the trace context stored
  at enqueue, when ``opentelemetry-api`` is installed.
"""
