"""Stored records as the API's answers (``qanat.server.api_models``): times as UTC
datetimes, payloads decoded by the codec (pydantic writes them as JSON), errors as
``{"type", "message", "traceback"}``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from qanat import codec
from qanat.failures import error_fields
from qanat.server.api_models import (
    ErrorInfo,
    EventOut,
    ExecutionDetail,
    ExecutionOut,
    FailedTriggerOut,
    LogOut,
    ProgressOut,
    StepOut,
)
from qanat.storage.base import ExecutionRecord
from qanat.views import EventInfo, LogLine, StepInfo, parse_progress

__all__ = ["error_info", "event_out", "execution_detail", "execution_out"]


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def error_info(fields: dict[str, Any] | None) -> ErrorInfo | None:
    """A recorded error's type, message and traceback (its other fields stay inside)."""
    if not fields:
        return None
    return ErrorInfo(
        type=str(fields.get("type", "Error")),
        message=str(fields.get("message", "")),
        traceback=fields.get("traceback"),
    )


def _fields(rec: ExecutionRecord) -> dict[str, Any]:
    p = parse_progress(rec.progress)
    return {
        "id": rec.id,
        "job": rec.job,
        "status": rec.status,
        "input": codec.loads(rec.input) if rec.input else None,
        "output": None if rec.output is None else codec.loads(rec.output),
        "error": error_info(error_fields(rec.error) if rec.error else None),
        "attempt": rec.attempt,
        "group": rec.group,
        "parent_id": rec.parent_id,
        "created_at": _dt(rec.created_at),
        "started_at": _dt(rec.started_at),
        "completed_at": _dt(rec.completed_at),
        "progress": None if p is None else ProgressOut(pct=p.pct, message=p.message,
                                                       details=p.details),
    }  # fmt: skip


def execution_out(rec: ExecutionRecord) -> ExecutionOut:
    """An execution as list items and action answers show it."""
    return ExecutionOut(**_fields(rec))


def execution_detail(
    rec: ExecutionRecord, steps: Sequence[StepInfo], logs: Sequence[LogLine]
) -> ExecutionDetail:
    """One execution with its steps and log."""
    return ExecutionDetail(
        **_fields(rec),
        steps=[
            StepOut(
                key=s.key,
                kind=s.kind,
                name=s.name,
                status=s.status,
                attempts=s.attempts,
                started_at=s.started_at,
                finished_at=s.finished_at,
                result=s.result,
                error=error_info(s.error),
            )
            for s in steps
        ],
        logs=[LogOut(at=ln.at, message=ln.message, fields=ln.fields) for ln in logs],
    )


def event_out(e: EventInfo) -> EventOut:
    """A sent event; its data (revived to the pipe's type by the client) written back as JSON."""
    return EventOut(
        id=e.id,
        pipe=e.pipe,
        data=e.data,
        sent_at=e.sent_at,
        source=e.source,
        started=e.executions,
        woken=e.woke,
        failed=[FailedTriggerOut(job=f.job, error=f.error, at=f.at) for f in e.failed],
    )
