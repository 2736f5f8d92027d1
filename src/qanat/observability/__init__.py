"""Metrics and traces (SPEC §14): ``qanat.observability.metrics`` (prometheus-client,
imported only by who serves ``/metrics``) and ``qanat.observability.tracing``
(OpenTelemetry, used by the engine when ``opentelemetry-api`` is installed)."""
