"""Blocking twins of the step functions (for plain ``def`` handlers), and ``queue.sync``.

Inside a plain handler, ``qanat.sync.run("name", fn)`` runs the async step on the
worker's event loop and blocks this thread until it is checkpointed. ``queue.sync``
wraps a queue for programs without an event loop: every coroutine method becomes a
blocking call run on a private loop thread.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from qanat import steps
from qanat.sizes import SizeLike
from qanat.steps.state import ExecState, current, set_current

if TYPE_CHECKING:
    from qanat.queue import Queue

T = TypeVar("T")


def _on_worker_loop(
    st: ExecState, coro_fn: Callable[..., Coroutine[Any, Any, T]], *args: Any, **kwargs: Any
) -> T:
    loop = st.worker.loop
    assert loop is not None

    async def bound() -> T:
        set_current(st)
        task = asyncio.current_task()
        assert task is not None
        st.loop_steps.add(task)  # so that interrupting the execution cancels it too
        try:
            return await coro_fn(*args, **kwargs)
        finally:
            st.loop_steps.discard(task)

    return asyncio.run_coroutine_threadsafe(bound(), loop).result()


def run(step: str | steps.Step, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Blocking ``qanat.run`` for plain ``def`` handlers."""
    return _on_worker_loop(current("sync.run"), steps.run, step, fn, *args, **kwargs)


def thread(
    step: str | steps.Step,
    fn: Callable[..., Any],
    *args: Any,
    memory: SizeLike | None = None,
    **kwargs: Any,
) -> Any:
    """Blocking ``qanat.thread`` for plain ``def`` handlers: ``fn`` runs in a child process."""
    st = current("sync.thread")
    return _on_worker_loop(st, steps.thread, step, fn, *args, memory=memory, **kwargs)


def sleep(duration: float | str | timedelta) -> None:
    """Blocking durable ``qanat.sleep``."""
    _on_worker_loop(current("sync.sleep"), steps.sleep, duration)


def sleep_until(when: datetime) -> None:
    """Blocking durable ``qanat.sleep_until``."""
    _on_worker_loop(current("sync.sleep_until"), steps.sleep_until, when)


progress = steps.progress
log = steps.log


class _LoopThread:
    """An event loop running in a daemon thread, for blocking callers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="qanat-sync", daemon=True)
        self.thread.start()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()


class _Blocking:
    """Wraps an object so its coroutine methods block and async iterators become lists."""

    def __init__(self, target: Any, runner: _LoopThread) -> None:
        self._target = target
        self._runner = runner

    def __getattr__(self, name: str) -> Any:
        return self._wrap(getattr(self._target, name))

    def __getitem__(self, name: str) -> Any:
        return self._wrap(self._target[name])

    def _wrap(self, value: Any) -> Any:
        if callable(value) and not isinstance(value, type):

            def call(*args: Any, **kwargs: Any) -> Any:
                res = value(*args, **kwargs)
                if inspect.iscoroutine(res):
                    res = self._runner.call(res)
                elif inspect.isasyncgen(res):
                    res = self._runner.call(_collect(res))
                if isinstance(res, list):
                    return [_Blocking(x, self._runner) if _wrappable(x) else x for x in res]
                return _Blocking(res, self._runner) if _wrappable(res) else res

            return call
        return _Blocking(value, self._runner) if _wrappable(value) else value

    def __repr__(self) -> str:
        return f"<sync {self._target!r}>"


def _wrappable(value: Any) -> bool:
    from qanat.execution import Execution
    from qanat.job import Job
    from qanat.pipe import Pipe
    from qanat.queries import Events, Executions
    from qanat.registry import Jobs, Pipes

    if isinstance(value, list):
        return False
    return isinstance(value, Job | Execution | Jobs | Executions | Pipe | Pipes | Events)


async def _collect(agen: Any) -> list[Any]:
    return [x async for x in agen]


class SyncQueue(_Blocking):
    """``queue.sync``: the queue's client API as blocking calls (no worker runs here)."""

    def __init__(self, queue: Queue) -> None:
        runner = _LoopThread()
        super().__init__(queue, runner)
        runner.call(queue.ensure_open())

    @property
    def jobs(self) -> Any:
        return _Blocking(self._target.jobs, self._runner)

    @property
    def executions(self) -> Any:
        return _Blocking(self._target.executions, self._runner)

    @property
    def pipes(self) -> Any:
        return _Blocking(self._target.pipes, self._runner)

    @property
    def events(self) -> Any:
        return _Blocking(self._target.events, self._runner)

    def close(self) -> None:
        """Close storage and stop the loop thread."""
        self._runner.call(self._target.stop())
        self._target._sync = None
        self._runner.loop.call_soon_threadsafe(self._runner.loop.stop)
        self._runner.thread.join(timeout=5)
        self._runner.loop.close()
