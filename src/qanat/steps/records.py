"""Progress and log lines of the running execution (not checkpointed steps)."""

from __future__ import annotations

from typing import Any

from qanat.steps.state import current


def progress(pct: float, message: str | None = None, details: Any = None) -> None:
    """Record the execution's progress, 0 to 100 (the latest value is kept)."""
    st = current("progress")
    st.worker.progress(st, pct, message, details)


def log(message: str, **fields: Any) -> None:
    """Append a line to the execution's log (visible with ``qanat show`` and ``.logs()``)."""
    st = current("log")
    st.worker.log(st, message, fields)
