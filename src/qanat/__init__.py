"""qanat: a durable job queue and workflow engine.

Jobs are Python functions whose steps (``run``, ``sleep``, calls to other jobs) are
checkpointed in storage, so an execution survives crashes and deploys and resumes
where it stopped. See the README and ``docs/`` for the guide.
"""

from qanat import sync
from qanat.context import Context
from qanat.durations import DEFAULT_BACKOFF, Backoff
from qanat.errors import (
    Cancelled,
    ConfigurationError,
    ExecutionFailed,
    NonDeterminism,
    NonRetryable,
    NotInJob,
    PayloadTooLarge,
    QanatError,
    RetryAfter,
    Skipped,
    StorageError,
    ThreadCrashed,
    Timeout,
    UnknownJob,
    UnknownPipe,
    WorkerLost,
)
from qanat.execution import Execution
from qanat.flow import Batch, CancelOn, Concurrency, Debounce, RateLimit, Singleton, Throttle
from qanat.hooks import Event
from qanat.job import Job, job
from qanat.pipe import Pipe, Trigger
from qanat.queue import Queue
from qanat.steps import Step, log, progress, run, sleep, sleep_until, thread
from qanat.views import EventInfo, FailedTrigger, LogLine, Progress, StepInfo

__all__ = [
    "DEFAULT_BACKOFF",
    "Backoff",
    "Batch",
    "CancelOn",
    "Cancelled",
    "Concurrency",
    "ConfigurationError",
    "Context",
    "Debounce",
    "Event",
    "EventInfo",
    "Execution",
    "ExecutionFailed",
    "FailedTrigger",
    "Job",
    "LogLine",
    "NonDeterminism",
    "NonRetryable",
    "NotInJob",
    "PayloadTooLarge",
    "Pipe",
    "Progress",
    "QanatError",
    "Queue",
    "RateLimit",
    "RetryAfter",
    "Singleton",
    "Skipped",
    "Step",
    "StepInfo",
    "StorageError",
    "ThreadCrashed",
    "Throttle",
    "Timeout",
    "Trigger",
    "UnknownJob",
    "UnknownPipe",
    "WorkerLost",
    "job",
    "log",
    "progress",
    "run",
    "sleep",
    "sleep_until",
    "sync",
    "thread",
]
