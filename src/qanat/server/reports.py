"""The node's side of worker reports: fenced, authorized item by item, and idempotent.

A report is a storage write a worker makes for an execution it claimed. Storage fences
it by owner (the contract); the node adds two things here:

* **the lease id**: each claim's opaque lease id (``claims.owner``) comes back with
  the worker's reports; a report whose lease names another owner than the one it
  acts for is refused (``409``) without touching storage.
* **idempotent retries**: a report re-sent after a network error (``x-qanat-retry``)
  may have been applied already. Whether it was is read from storage, never from the
  node's memory, so it holds across a node restart: a stored step identical to the
  checkpoint's, a final status/attempt/output equal to the finish's with the claim
  count unchanged (no one claimed it since), a waiter and a suspended execution for a
  wait. Such a retry is answered as applied and writes nothing again.
"""

from __future__ import annotations

from typing import Any

from qanat.storage.base import (
    COMPLETED,
    PAUSED,
    PENDING,
    WAITING,
    Checkpoint,
    ExecutionRecord,
    Finish,
    Storage,
    Waiter,
    WaitState,
)
from qanat.storage.http.protocol import parse_lease, refused


def lost(op: str) -> Any:
    """What a report refused before it reached storage returns (as storage would)."""
    if op in ("checkpoint", "end_wait"):
        return "lost"
    if op == "wait":
        return WaitState("lost", None, False)
    if op == "append_logs":
        return 0
    if op == "release":
        return None
    return False


def lease_claims(lease: Any, owner: Any) -> tuple[bool, int | None]:
    """``(valid, claims)`` of a report's lease id for ``owner`` (valid when absent)."""
    if lease is None:
        return True, None
    parsed = parse_lease(str(lease))
    if parsed is None or parsed[1] != owner:
        return False, None
    return True, parsed[0]


def _same_claim(rec: ExecutionRecord | None, claims: int | None) -> bool:
    return rec is not None and rec.owner is None and (claims is None or rec.claims == claims)


async def apply(
    storage: Storage, op: str, args: dict[str, Any], claims: int | None, retry: bool
) -> Any:
    """Run report ``op`` on storage; on a retry, answer from storage if it was applied."""
    if retry and op in ("checkpoint", "end_wait"):
        cp: Checkpoint = args["cp"]
        if await _step_stored(storage, args["execution_id"], cp):
            return None
    result = await getattr(storage, op)(**args)
    if not (retry and refused(op, result)):
        return result
    ident = args["execution_id"]
    rec = await storage.get(ident)
    if not _same_claim(rec, claims):
        return result
    assert rec is not None
    if op == "finish":
        fin: Finish = args["fin"]
        if rec.status != fin.status:
            return result
        if fin.status == PENDING and rec.attempt != fin.attempt:
            return result
        if fin.status == COMPLETED and rec.output != fin.output:
            return result
        return True
    if op == "suspend" and rec.status in (args["status"], PAUSED):
        return True
    if op == "wait" and rec.status in (WAITING, PAUSED):
        w: Waiter = args["waiter"]
        stored = await storage.waiter(ident, w.key)
        if stored is not None:
            return WaitState(None, stored, True)
    return result


async def _step_stored(storage: Storage, execution_id: str, cp: Checkpoint) -> bool:
    step = cp.step
    for s in await storage.steps(execution_id):
        if s.key == step.key:
            return s.status == step.status and s.result == step.result and s.error == step.error
    return False


async def enqueue_once(
    storage: Storage, records: list[ExecutionRecord], retry: bool
) -> list[ExecutionRecord]:
    """``enqueue``; a retry first takes back the records its first try stored."""
    if not retry:
        return await storage.enqueue(records)
    stored = {r.id: r for r in await storage.get_many([r.id for r in records])}
    fresh = [r for r in records if r.id not in stored]
    for rec in await storage.enqueue(fresh) if fresh else []:
        stored.setdefault(rec.id, rec)
    out: list[ExecutionRecord] = []
    by_key = {(r.job, r.key): r for r in stored.values() if r.key is not None}
    for r in records:
        found = stored.get(r.id) or (by_key.get((r.job, r.key)) if r.key is not None else None)
        out.append(found if found is not None else r)
    return out
