"""Errors that qanat raises, and errors a handler may raise to steer retries."""

from __future__ import annotations

from datetime import datetime, timedelta


class QanatError(Exception):
    """Base class of every error qanat raises on its own account."""


class ConfigurationError(QanatError, ValueError):
    """A job, pipe or queue was defined with options that cannot work."""


class NotInJob(QanatError, RuntimeError):
    """A step function was called outside a running job."""


class NonDeterminism(QanatError):
    """Replay met a recorded step of another kind or name at the same key."""


class Timeout(QanatError, TimeoutError):
    """An attempt exceeded its timeout, or an execution its deadline."""


class ThreadCrashed(QanatError):
    """The child process running a ``thread`` step died (segfault, ``os._exit``, a signal,
    the OOM killer, ``MemoryError`` at its ``memory`` limit) before returning a result.

    Fails that attempt of the step, which is retried per its ``retry``; the worker and
    its other executions carry on.
    """


class WorkerLost(QanatError):
    """Workers died ``max_recoveries`` times under an execution with no checkpoint in
    between (a poison pill): it is failed instead of crashing worker after worker."""


class PayloadTooLarge(QanatError, ValueError):
    """A payload (input, output, step result, event data) is over ``Queue(max_payload=)``."""


class Skipped(QanatError):
    """Flow control dropped the execution; ``reason`` says why."""

    def __init__(self, reason: str, execution_id: str | None = None) -> None:
        super().__init__(f"execution {execution_id} was skipped: {reason}")
        self.reason = reason
        self.execution_id = execution_id


class Cancelled(QanatError):
    """The execution was cancelled before it produced a result."""

    def __init__(self, execution_id: str, reason: str | None = None) -> None:
        msg = f"execution {execution_id} was cancelled"
        super().__init__(msg + (f": {reason}" if reason else ""))
        self.execution_id = execution_id
        self.reason = reason


class ExecutionFailed(QanatError):
    """An execution failed; raised by ``result()`` when the original error type is unknown.

    ``error_type`` and ``message`` are the recorded error's class name and text.
    """

    def __init__(self, error_type: str, message: str, execution_id: str | None = None) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message
        self.execution_id = execution_id


class StorageError(QanatError):
    """The storage is unusable: wrong file, newer schema, unreachable server."""


class UnknownJob(QanatError, KeyError):
    """No job with that name is registered on the queue."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown job"


class UnknownPipe(QanatError, KeyError):
    """No pipe with that name is registered on the queue."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown pipe"


class NonRetryable(Exception):
    """Raise from a handler or step to fail at once, without further attempts."""


class RetryAfter(Exception):
    """Raise from a handler or step to retry at a given time or after a delay."""

    def __init__(self, delay: float | str | timedelta | datetime, message: str = "") -> None:
        super().__init__(message or f"retry after {delay}")
        self.delay = delay
        self.message = message


class _ControlFlow(BaseException):
    """Unwinds a handler for engine reasons. Not an ``Exception`` so user code can't swallow it."""


class Suspend(_ControlFlow):
    """The execution leaves this worker (long sleep, pause) and will be replayed later."""


class LeaseLost(_ControlFlow):
    """Storage no longer lists this worker as the owner (cancelled, paused, taken over)."""

    def __init__(self, status: str | None) -> None:
        super().__init__(status)
        self.status = status
