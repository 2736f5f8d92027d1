"""``thread`` steps: a checkpointed call run in a child process of the worker's pool.

For CPU-bound work (true parallelism, outside the worker's GIL) and for code that may
crash or run away: a segfault, ``os._exit`` or ``MemoryError`` at the ``memory`` limit
fails that attempt of the step with ``ThreadCrashed`` instead of the worker. Replay,
retries, backoff and timeout are those of ``run`` (a ``thread`` step is its own kind).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qanat.sizes import SizeLike, parse_size
from qanat.steps.run import Step, checkpointed
from qanat.steps.state import ExecState


async def thread(
    step: str | Step,
    fn: Callable[..., Any],
    *args: Any,
    memory: SizeLike | None = None,
    **kwargs: Any,
) -> Any:
    """Run ``fn(*args, **kwargs)`` in a child process as a checkpointed step; its result.

    ``fn`` must be importable (a module-level function); it, its arguments and its
    return value are pickled in memory to cross the process boundary (never stored);
    the result is checkpointed as JSON like a ``run`` step's. ``memory`` (``"512MB"``)
    caps the child's address space while it runs ``fn``. The step's ``timeout`` and a
    cancel of the execution kill the child. A crash of the child fails that attempt
    with ``qanat.ThreadCrashed``, retried per ``Step(retry=)``.
    """
    name = step.name if isinstance(step, Step) else step
    limit = None if memory is None else parse_size(memory, what=f"thread step {name!r}: memory")

    async def call(st: ExecState) -> Any:
        pool = st.worker.process_pool()
        return await pool.call(fn, args, kwargs, memory=limit, what=f"thread step {name!r}")

    return await checkpointed("thread", step, fn, call)
