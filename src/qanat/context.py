"""The ``Context`` a handler can ask for with a parameter annotated ``qanat.Context``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qanat.steps.state import ExecState


class Context:
    """Facts about the running execution, and its log and progress.

    Injected into a handler parameter annotated ``qanat.Context``; not part of the input.
    """

    def __init__(self, state: ExecState, app: Any) -> None:
        self._state = state
        self.context = app
        """The queue's application ``context`` object."""

    @property
    def execution_id(self) -> str:
        """The id of this execution."""
        return self._state.id

    @property
    def job(self) -> str:
        """The name of the job."""
        return self._state.record.job

    @property
    def attempt(self) -> int:
        """The attempt number, 1 for the first."""
        return self._state.attempt

    @property
    def cancelled(self) -> bool:
        """True once the execution was cancelled (plain ``def`` handlers should check it)."""
        return self._state.stop_reason == "cancelled"

    def log(self, message: str, **fields: Any) -> None:
        """Append a line to the execution's log."""
        self._state.worker.log(self._state, message, fields)

    def progress(self, pct: float, message: str | None = None, details: Any = None) -> None:
        """Record progress, 0 to 100."""
        self._state.worker.progress(self._state, pct, message, details)
