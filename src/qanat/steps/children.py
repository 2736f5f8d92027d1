"""Child executions started from inside a job, as checkpointed steps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from qanat import codec
from qanat.steps.state import current
from qanat.storage.base import COMPLETED, StepRecord

if TYPE_CHECKING:
    from qanat.execution import Execution
    from qanat.job import Job


async def start_child(
    job: Job[Any], args: Sequence[Any], kwargs: Mapping[str, Any], opts: dict[str, Any]
) -> Execution:
    """Start a child execution as a checkpointed step; a replay returns the same child."""
    st = current("start")
    st.boundary()
    key = st.next_key(job.name)
    rec = st.recorded(key, "start", job.name)
    queue = st.worker.queue
    if rec is not None and rec.result is not None:
        return queue.handle_of(str(codec.loads(rec.result)), job.name)
    opts.setdefault("group", st.record.group)
    child, value = job.new_record(args, kwargs, parent_id=st.id, at=queue.clock(), **opts)
    children = [child]
    if job.cache is not None:
        child.input = codec.canonical(codec.loads(child.input))
        since = 0.0 if job.cache == float("inf") else queue.clock() - job.cache
        hit = await st.worker.storage.find_cached(job.name, child.input, since)
        if hit is not None:
            child, children = hit, []
    fresh = bool(children)
    if child.key is not None and children:
        # a keyed child may exist already: store it first (idempotent by key) so the
        # step records the id that really is in storage
        new_id = child.id
        [child] = await st.worker.storage.enqueue([child])
        children, fresh = [], child.id == new_id
    at = queue.clock()
    text = codec.dumps(child.id)
    step = StepRecord(st.id, key, "start", job.name, COMPLETED, text, None, 1, st.attempt, at, at)
    adopted = bool(children) and st.worker.adopt(child)
    try:
        await st.checkpoint(step, children)
    except BaseException:
        if adopted:
            st.worker.unadopt()
        raise
    if adopted:
        st.worker.spawn_adopted(child, child)
    if fresh and not adopted:  # an adopted child runs here already: nothing to claim
        st.worker.notify_local()
        await queue.fire(job, "trigger", child.id, value)
    return queue.handle_of(child.id, job.name)
