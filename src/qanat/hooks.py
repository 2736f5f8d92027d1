"""Hooks: a job's own (``on_success=...``) and the queue's global ones (``queue.on``).

A hook runs after what it reports has committed, at most once (a worker killed between
the commit and the call loses it), and one that raises is logged, never breaking the
execution. Order: the job's hook first, then the global ones.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qanat.job import Job

log = logging.getLogger("qanat")

#: What ``queue.on(event, ...)`` listens to.
EVENTS = (
    "start",
    "success",
    "failure",
    "error",
    "retry",
    "cancel",
    "pause",
    "resume",
    "settled",
    "progress",
    "trigger",
)
HOOK_FOR = {
    "start": "on_start",
    "success": "on_success",
    "failure": "on_failure",
    "error": "on_error",
    "cancel": "on_cancel",
    "settled": "on_settled",
    "trigger": "on_trigger",
}


@dataclass(frozen=True)
class Event:
    """What a global hook (``queue.on(...)``) receives."""

    name: str
    execution_id: str
    job: str
    timestamp: datetime
    payload: Any


class Hooks:
    """The global hooks of one queue, and the firing of a job's hooks with them."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[Callable[[Event], Any]]] = {}

    def on(self, event: str, handler: Callable[[Event], Any]) -> None:
        """Call ``handler(event)`` on ``start``, ``success``, ``failure``, ``error``, ``retry``,
        ``cancel``, ``pause``, ``resume``, ``settled``, ``progress`` or ``trigger`` of any
        execution."""
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}; events are: {', '.join(EVENTS)}")
        self._handlers.setdefault(event, []).append(handler)

    def has_hooks(self, event: str) -> bool:
        """Whether any global hook listens to ``event``."""
        return bool(self._handlers.get(event))

    async def fire(
        self, j: Job[Any], event: str, execution_id: str, value: Any, *extra: Any
    ) -> None:
        """Run the job's hook for ``event``, then the global ones. Errors are logged only."""
        hook = j.hooks.get(HOOK_FOR.get(event, ""))
        handlers = self._handlers.get(event)
        if hook is None and not handlers:
            return
        data = None if value is None else j.input_for_hooks(value)
        if hook is not None:
            await call_hook(hook, data, *extra)
        if handlers:
            ev = Event(
                event,
                execution_id,
                j.name,
                datetime.now(UTC),
                {"input": data, **({"detail": extra[0]} if extra else {})},
            )
            for h in handlers:
                await call_hook(h, ev)


async def call_hook(hook: Callable[..., Any], *args: Any) -> None:
    try:
        res = hook(*args)
        if inspect.isawaitable(res):
            await res
    except Exception:
        log.exception("qanat: hook %r raised", getattr(hook, "__name__", hook))
