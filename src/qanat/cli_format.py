"""Rendering for the ``qanat`` command: records as JSON-ready dicts and as text tables."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from qanat import codec
from qanat.failures import error_fields
from qanat.storage.base import RUNNING, ExecutionRecord, Storage, now
from qanat.views import LogLine, Progress, StepInfo, parse_progress


def dumps(value: Any, *, pretty: bool = False) -> str:
    """JSON for output: anything JSON has no type for becomes its ``str``."""
    return json.dumps(value, default=str, indent=2 if pretty else None, ensure_ascii=False)


def payload(text: str | None) -> Any:
    """A stored payload (codec JSON) as Python data."""
    return None if text is None else codec.loads(text)


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def local_time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def run_time(rec: ExecutionRecord) -> float | None:
    """Seconds from first start to completion (or to now while it is running)."""
    if rec.started_at is None:
        return None
    end = rec.completed_at if rec.completed_at is not None else now()
    if rec.completed_at is None and rec.status != RUNNING:
        return None
    return max(0.0, end - rec.started_at)


def seconds(value: float | None) -> str:
    """A duration for people: ``120ms``, ``4.2s``, ``3m05s``, ``2h10m``."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 60:
        return f"{value:.1f}s"
    if value < 3600:
        m, s = divmod(int(value), 60)
        return f"{m}m{s:02d}s"
    h, rest = divmod(int(value), 3600)
    return f"{h}h{rest // 60:02d}m"


def describe_storage(storage: Storage) -> str:
    path = getattr(storage, "path", None)
    if isinstance(path, str):
        return f"sqlite:///{os.path.abspath(path)}"
    return type(storage).__name__


def error_line(error: str | None) -> str:
    """``Type: message`` of a recorded error."""
    if not error:
        return "unknown error"
    fields = error_fields(error)
    return f"{fields.get('type', 'Error')}: {fields.get('message', '')}"


def progress_json(p: Progress | None) -> dict[str, Any] | None:
    if p is None:
        return None
    return {"pct": p.pct, "message": p.message, "details": p.details}


def record_json(rec: ExecutionRecord) -> dict[str, Any]:
    """Everything about an execution record, as JSON-ready data."""
    return {
        "id": rec.id,
        "job": rec.job,
        "status": rec.status,
        "attempt": rec.attempt,
        "max_attempts": rec.max_attempts,
        "priority": rec.priority,
        "key": rec.key,
        "group": rec.group,
        "parent_id": rec.parent_id,
        "created_at": iso(rec.created_at),
        "run_at": iso(rec.run_at),
        "started_at": iso(rec.started_at),
        "completed_at": iso(rec.completed_at),
        "deadline": iso(rec.deadline),
        "duration": run_time(rec),
        "owner": rec.owner,
        "input": payload(rec.input),
        "output": payload(rec.output),
        "error": error_fields(rec.error) if rec.error else None,
        "reason": rec.reason,
        "progress": progress_json(parse_progress(rec.progress)),
        "pause_requested": rec.pause_requested,
    }


def step_json(s: StepInfo) -> dict[str, Any]:
    return {
        "key": s.key,
        "kind": s.kind,
        "name": s.name,
        "status": s.status,
        "attempts": s.attempts,
        "started_at": s.started_at.isoformat() if s.started_at else None,
        "finished_at": s.finished_at.isoformat() if s.finished_at else None,
        "duration": step_duration(s),
        "result": s.result,
        "error": s.error,
    }


def log_json(line: LogLine) -> dict[str, Any]:
    return {"at": line.at.isoformat(), "message": line.message, "fields": line.fields}


def step_duration(s: StepInfo) -> float | None:
    if s.started_at is None or s.finished_at is None:
        return None
    return max(0.0, (s.finished_at - s.started_at).total_seconds())


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain left-aligned text table."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip() for line in lines
    )


def ls_table(recs: Sequence[ExecutionRecord]) -> str:
    rows = [
        [
            r.id,
            r.job,
            r.status,
            f"{r.attempt}/{r.max_attempts}",
            local_time(r.created_at),
            seconds(run_time(r)),
            ls_note(r),
        ]
        for r in recs
    ]
    return table(["ID", "JOB", "STATUS", "ATTEMPT", "CREATED", "DURATION", "NOTE"], rows)


def ls_note(r: ExecutionRecord) -> str:
    """Why an execution waits or was dropped (flow control, cancel), or when it is due."""
    if r.reason:
        return r.reason
    if r.status == "pending" and r.run_at > now():
        return f"due {local_time(r.run_at)}"
    return ""


def show_text(rec: ExecutionRecord, steps: Sequence[StepInfo], logs: Sequence[LogLine]) -> str:
    """``qanat show`` for people."""
    out: list[str] = []

    def field(name: str, value: object) -> None:
        out.append(f"{name:<10} {value}")

    field("id", rec.id)
    field("job", rec.job)
    field("status", rec.status + (" (pause requested)" if rec.pause_requested else ""))
    field("attempt", f"{rec.attempt}/{rec.max_attempts}")
    for name, value in (
        ("key", rec.key),
        ("group", rec.group),
        ("parent", rec.parent_id),
        ("priority", rec.priority or None),
        ("owner", rec.owner),
        ("reason", rec.reason),
    ):
        if value is not None:
            field(name, value)
    field("created", local_time(rec.created_at))
    if rec.run_at > rec.created_at + 0.001:
        field("run at", local_time(rec.run_at))
    field("started", local_time(rec.started_at))
    field("completed", local_time(rec.completed_at))
    field("duration", seconds(run_time(rec)))
    field("input", dumps(payload(rec.input)))
    if rec.output is not None:
        field("output", dumps(payload(rec.output)))
    if rec.error:
        field("error", error_line(rec.error))
        tb = error_fields(rec.error).get("traceback")
        if tb:
            out.extend("    " + ln for ln in str(tb).rstrip().splitlines())
    p = parse_progress(rec.progress)
    if p is not None:
        field("progress", f"{p.pct:g}%" + (f" {p.message}" if p.message else ""))
    out.append("")
    if steps:
        out.append("steps:")
        rows = [
            [
                s.key,
                s.kind,
                s.status,
                str(s.attempts),
                seconds(step_duration(s)),
                (
                    f"{s.error.get('type', 'Error')}: {s.error.get('message', '')}"
                    if s.error
                    else ""
                ),
            ]
            for s in steps
        ]
        out.extend(
            "  " + ln
            for ln in table(
                ["KEY", "KIND", "STATUS", "ATTEMPTS", "DURATION", "ERROR"], rows
            ).splitlines()
        )
    else:
        out.append("steps: none")
    if logs:
        out.append("logs:")
        for ln in logs:
            extra = " " + dumps(ln.fields) if ln.fields else ""
            out.append(f"  {ln.at.astimezone().strftime('%H:%M:%S.%f')[:-3]} {ln.message}{extra}")
    else:
        out.append("logs: none")
    return "\n".join(out)


def stats_text(s: dict[str, Any]) -> str:
    """``qanat stats`` for people."""
    by_status: dict[str, int] = s.get("by_status", {})
    by_job: dict[str, dict[str, int]] = s.get("by_job", {})
    statuses = [k for k, v in by_status.items() if v] or list(by_status)
    rows = [
        [job, *(str(counts.get(st, 0)) for st in statuses)]
        for job, counts in sorted(by_job.items())
    ]
    rows.append(["(all)", *(str(by_status.get(st, 0)) for st in statuses)])
    out = [table(["JOB", *(st.upper() for st in statuses)], rows), ""]
    out.append(f"retries       {s.get('retries', 0)}")
    out.append(f"mean runtime  {seconds(s.get('mean_runtime'))}")
    out.append(f"p95 runtime   {seconds(s.get('p95_runtime'))}")
    if s.get("paused_jobs"):
        out.append(f"paused jobs   {', '.join(s['paused_jobs'])}")
    return "\n".join(out)


class ProgressLine:
    """A progress bar on a terminal (redrawn in place), or one line per change elsewhere."""

    WIDTH = 30

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.drawn = False

    def update(self, p: Progress) -> None:
        pct = max(0.0, min(100.0, p.pct))
        msg = f" {p.message}" if p.message else ""
        if self.tty:
            full = round(self.WIDTH * pct / 100)
            bar = "#" * full + "-" * (self.WIDTH - full)
            self.stream.write(f"\r\x1b[2K[{bar}] {pct:5.1f}%{msg}")
            self.drawn = True
        else:
            self.stream.write(f"progress {pct:g}%{msg}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False
