"""OpenTelemetry traces (SPEC §14), when ``opentelemetry-api`` is installed (``qanat[otel]``).

* :func:`capture` — at enqueue, the caller's trace context as the propagation headers
  of the global propagator (W3C ``traceparent``, ``tracestate``, ``baggage``), JSON
  text stored with the execution (``ExecutionRecord.trace``);
* :func:`attempt_span` — in the worker, a ``qanat.execution`` span per attempt whose
  parent is that stored context, so the attempt joins the caller's trace across
  processes and machines;
* :func:`step_span` — a child span per step run (``run`` and ``thread`` steps).

Without the package nothing is imported and every function is a no-op. With it, qanat
imports it only once the application has (``opentelemetry.trace`` is loaded) or names
a provider in ``$OTEL_PYTHON_TRACER_PROVIDER``; with no tracer provider configured
(``trace.set_tracer_provider``) no span is made: the engine pays one check per attempt
and per step.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import types
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("qanat")

#: Span names.
EXECUTION_SPAN = "qanat.execution"
STEP_SPAN = "qanat.step"

#: Names a tracer provider that OpenTelemetry loads on first use.
_PROVIDER_ENV = "OTEL_PYTHON_TRACER_PROVIDER"
#: Read once: ``os.environ`` encodes the key on every lookup, and this check runs per
#: attempt and per step (a provider named later in the process's life is not seen).
_PROVIDER_SET = _PROVIDER_ENV in os.environ
_UNKNOWN = object()
_otel: Any = None  # the opentelemetry modules once loaded; False: not installed
_tracer: tuple[Any, Any] | None = None  # (provider, its qanat tracer)


def _load() -> Any:
    """The opentelemetry modules we use (a namespace), or False: not installed, or not
    used by this process so far (then importing it would only cost: ``propagate`` reads
    entry points, a tenth of a second at a CLI's start)."""
    global _otel
    if _otel is None:
        if not _PROVIDER_SET and "opentelemetry.trace" not in sys.modules:
            return False  # no span can exist, no provider is set: asked again next time
        try:
            from opentelemetry import context, propagate, trace
        except ImportError:
            _otel = False
        else:
            _otel = types.SimpleNamespace(
                trace=trace,
                propagate=propagate,
                context=context,
                provider_from_env=_PROVIDER_SET,
            )
    return _otel


def available() -> bool:
    """Whether ``opentelemetry-api`` is installed."""
    return bool(_load())


def active_tracer() -> Any:
    """The qanat tracer when a tracer provider is configured, else None: the engine's
    check before it makes a span (well under a microsecond when tracing is off)."""
    global _tracer
    otel = _load()
    if not otel:
        return None
    # the global itself: ``get_tracer_provider()`` reads os.environ on every call while
    # none is set (a few microseconds per attempt and per step, for nothing)
    provider: Any = getattr(otel.trace, "_TRACER_PROVIDER", _UNKNOWN)
    if provider is None:
        if not otel.provider_from_env:
            return None
        provider = otel.trace.get_tracer_provider()  # loads the one the variable names
    elif provider is _UNKNOWN:  # another version of the API: ask it
        provider = otel.trace.get_tracer_provider()
    if isinstance(provider, otel.trace.ProxyTracerProvider):
        return None  # no SDK set up: every span would be a no-op
    if _tracer is None or _tracer[0] is not provider:
        _tracer = (provider, provider.get_tracer("qanat"))
    return _tracer[1]


def capture() -> str | None:
    """The current trace context as JSON propagation headers, or None outside a trace."""
    otel = _load()
    if not otel or not otel.trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    otel.propagate.inject(carrier)
    return json.dumps(carrier, separators=(",", ":")) if carrier else None


def _parent(trace_text: str | None) -> Any:
    """The context stored with an execution, or None (a root span)."""
    if not trace_text:
        return None
    try:
        carrier = json.loads(trace_text)
    except ValueError:
        log.warning("qanat: ignoring a stored trace context that is not JSON: %.80r", trace_text)
        return None
    if not isinstance(carrier, dict):
        return None
    return _load().propagate.extract({str(k): str(v) for k, v in carrier.items()})


@contextlib.contextmanager
def attempt_span(
    job: str, execution_id: str, attempt: int, trace_text: str | None
) -> Iterator[Any]:
    """A ``qanat.execution`` span around one attempt, child of the stored context; yields
    the span (None when tracing is off). Current while the handler runs, so step spans
    and executions the handler starts are its children."""
    tracer = active_tracer()
    if tracer is None:
        yield None
        return
    attrs = {"qanat.job": job, "qanat.execution_id": execution_id, "qanat.attempt": attempt}
    with tracer.start_as_current_span(
        EXECUTION_SPAN,
        context=_parent(trace_text),
        kind=_load().trace.SpanKind.CONSUMER,
        attributes=attrs,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


def end_attempt(span: Any, status: str, error: BaseException | None = None) -> None:
    """Record how an attempt ended on its span: ``qanat.status`` (completed, failed,
    retry, cancelled, waiting...) and, for a failure, the exception and an error status."""
    if span is None:
        return
    span.set_attribute("qanat.status", status)
    if error is not None:
        span.record_exception(error)
        span.set_status(_load().trace.Status(_load().trace.StatusCode.ERROR, str(error)[:200]))


@contextlib.contextmanager
def step_span(kind: str, name: str, key: str) -> Iterator[Any]:
    """A ``qanat.step`` span around one step run (all of its attempts); an error that
    escapes it (its retries exhausted) marks the span failed."""
    tracer = active_tracer()
    if tracer is None:
        yield None
        return
    attrs = {"qanat.step": name, "qanat.step.key": key, "qanat.step.kind": kind}
    with tracer.start_as_current_span(STEP_SPAN, attributes=attrs) as span:
        yield span
