"""The shapes of the public HTTP API (SPEC §13) as pydantic models: the requests they
validate and the responses they serialize. ``/api/openapi.json`` is generated from these
same classes (``qanat.server.api_openapi``), so the document cannot drift from what the
routes accept and answer.

Request models forbid unknown fields, so a typo (``{"inptu": ...}``) is a ``400`` naming
it rather than a silently ignored option.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt, field_validator

from qanat.durations import parse_duration
from qanat.storage.base import STATUSES

__all__ = [
    "CancelRequest",
    "ErrorBody",
    "ErrorInfo",
    "EventOut",
    "EventPage",
    "EventsQuery",
    "ExecutionDetail",
    "ExecutionOut",
    "ExecutionPage",
    "ExecutionsQuery",
    "FailedTriggerOut",
    "Health",
    "LogOut",
    "NoBody",
    "ProgressOut",
    "SendRequest",
    "SendResult",
    "StartRequest",
    "StatsOut",
    "StepOut",
]

Status = Literal[
    "pending", "running", "waiting", "paused", "completed", "failed", "cancelled", "skipped"
]
assert set(Status.__args__) == set(STATUSES), "Status must list the storage's statuses"  # type: ignore[attr-defined]

#: A duration as the API takes it: seconds (a number) or a string such as ``"5m"``.
Duration = Annotated[
    float | str,
    Field(description='Seconds, or a duration string such as "30s", "5m", "1h30m".'),
]

_REQUEST = ConfigDict(extra="forbid")
# Payloads are whatever a job stored: bytes go out as base64, non-finite floats as
# strings, so every answer is strict JSON.
_RESPONSE = ConfigDict(ser_json_bytes="base64", ser_json_inf_nan="strings")

#: The most rows one list request returns.
MAX_LIMIT = 1000


def _duration(value: Any, what: str) -> Any:
    """A duration string must parse (``qanat.durations`` holds the rule); numbers too."""
    if value is not None:
        parse_duration(value, what=what)
    return value


# --- requests ---------------------------------------------------------------------------


class StartRequest(BaseModel):
    """The body of ``POST /api/jobs/{job}/start``: the job's input and call options."""

    model_config = _REQUEST

    input: dict[str, Any] = Field(
        default_factory=dict, description="The job's input: its arguments by name."
    )
    key: str | None = Field(
        None, description="Idempotency key: a second start with it returns the first execution."
    )
    priority: StrictInt | None = Field(None, description="Higher starts first.")
    delay: Duration | None = Field(None, description="Start no earlier than this from now.")
    run_at: AwareDatetime | None = Field(
        None, description="Start no earlier than this time (ISO 8601 with a zone)."
    )
    # Tried in this order: a number is seconds (not a Unix time), then an ISO time, then
    # a duration string ("2h").
    deadline: float | AwareDatetime | str | None = Field(
        None,
        union_mode="left_to_right",
        description="Fail with Timeout if not finished by then: a time with its zone, or a "
        'duration from now (seconds, or a string such as "2h").',
    )
    group: str | None = Field(None, description="A run id shared by related executions.")

    @field_validator("delay")
    @classmethod
    def _delay(cls, v: Any) -> Any:
        return _duration(v, "delay")

    @field_validator("deadline")
    @classmethod
    def _deadline(cls, v: Any) -> Any:
        if isinstance(v, str):
            try:
                naive = datetime.fromisoformat(v)
            except ValueError:
                naive = None
            if naive is not None:  # an aware one was taken as a datetime already
                raise ValueError(f"time {v!r} has no timezone: add one, e.g. {v}Z")
        return v if isinstance(v, datetime) else _duration(v, "deadline")

    def options(self) -> dict[str, Any]:
        """The call options given, as ``Job.start`` takes them."""
        return self.model_dump(exclude={"input"}, exclude_none=True)


class SendRequest(BaseModel):
    """The body of ``POST /api/pipes/{pipe}/send``."""

    model_config = _REQUEST

    data: Any = Field(description="The event's data, validated against the pipe's input type.")


class CancelRequest(BaseModel):
    """The optional body of ``POST /api/executions/{id}/cancel``."""

    model_config = _REQUEST

    reason: str | None = Field(None, description="Recorded with the cancellation.")


class NoBody(BaseModel):
    """The optional body of ``pause``, ``resume`` and ``retry``: nothing, or ``{}``."""

    model_config = _REQUEST


class ExecutionsQuery(BaseModel):
    """The query of ``GET /api/executions`` (``job`` and ``status`` repeat, or take
    comma-separated values)."""

    model_config = _REQUEST

    job: list[str] | None = Field(None, description="Only executions of these jobs.")
    status: list[Status] | None = Field(None, description="Only executions in these statuses.")
    group: str | None = Field(None, description="Only executions of this group.")
    limit: int = Field(50, ge=1, le=MAX_LIMIT, description="At most this many items.")
    cursor: str | None = Field(None, description="The `next` of the previous page.")


class EventsQuery(BaseModel):
    """The query of ``GET /api/events``."""

    model_config = _REQUEST

    pipe: str | None = Field(None, description="Only events of this pipe.")
    limit: int = Field(50, ge=1, le=MAX_LIMIT, description="At most this many items.")
    cursor: str | None = Field(None, description="The `next` of the previous page.")


# --- responses --------------------------------------------------------------------------


class ErrorBody(BaseModel):
    """Every refused request: one sentence saying what was wrong and where."""

    error: str


class ErrorInfo(BaseModel):
    """A recorded error."""

    type: str
    message: str
    traceback: str | None = None


class ProgressOut(BaseModel):
    """The latest progress an execution reported."""

    pct: float
    message: str | None = None
    details: Any = None


class StepOut(BaseModel):
    """A recorded step."""

    model_config = _RESPONSE

    key: str
    kind: str
    name: str
    status: str
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None
    result: Any = None
    error: ErrorInfo | None = None


class LogOut(BaseModel):
    """A line of an execution's log."""

    model_config = _RESPONSE

    at: datetime
    message: str
    fields: dict[str, Any]


class ExecutionOut(BaseModel):
    """An execution (times ISO 8601 UTC)."""

    model_config = _RESPONSE

    id: str
    job: str
    status: Status
    input: Any
    output: Any
    error: ErrorInfo | None
    attempt: int
    group: str | None
    parent_id: str | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    progress: ProgressOut | None


class ExecutionDetail(ExecutionOut):
    """One execution with its steps (in the order they started) and its log."""

    steps: list[StepOut]
    logs: list[LogOut]


class ExecutionPage(BaseModel):
    """A page of executions, newest first; ``next`` is the cursor of the next page."""

    model_config = _RESPONSE

    items: list[ExecutionOut]
    next: str | None


class SendResult(BaseModel):
    """What a send did: the event's id, the executions it started and those it woke."""

    id: str
    started: list[str]
    woken: list[str]


class FailedTriggerOut(BaseModel):
    """A trigger of the event that could not start its job."""

    job: str
    error: str
    at: datetime


class EventOut(BaseModel):
    """A sent event."""

    model_config = _RESPONSE

    id: str
    pipe: str
    data: Any
    sent_at: datetime
    source: str | None = Field(description="The execution that sent it, if a job did.")
    started: list[str]
    woken: list[str]
    failed: list[FailedTriggerOut]


class EventPage(BaseModel):
    """A page of events, newest first; ``next`` is the cursor of the next page."""

    model_config = _RESPONSE

    items: list[EventOut]
    next: str | None


class StatsOut(BaseModel):
    """What ``queue.stats()`` returns: counts by status and by job (job -> status ->
    count), total retries, mean and p95 run time in seconds, the paused jobs."""

    by_status: dict[str, int]
    by_job: dict[str, dict[str, int]]
    retries: int
    mean_runtime: float | None
    p95_runtime: float | None
    paused_jobs: list[str]


class Health(BaseModel):
    """The storage answered."""

    status: Literal["ok"]
