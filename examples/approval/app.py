"""Human in the loop: an order waits for an approval, and gives up after a deadline.

Run from the repository root (see README.md in this directory)::

    python -m qanat worker examples.approval.app:queue
    python -m qanat -A examples.approval.app:queue start place_order --input '{"order_id": 42}'
    python -m qanat -A examples.approval.app:queue send approvals \\
        --data '{"order_id": 42, "approved": true}'
"""

from __future__ import annotations

import os

import pydantic

import qanat
from qanat import Pipe, job


class Approval(pydantic.BaseModel):
    order_id: int
    approved: bool
    note: str = ""


approvals = Pipe("approvals", input=Approval)

#: How long an order waits for a person (QANAT_APPROVAL_TIMEOUT overrides it).
DEADLINE = os.environ.get("QANAT_APPROVAL_TIMEOUT", "3d")


@job
async def place_order(order_id: int) -> str:
    qanat.log("waiting for approval", order_id=order_id, deadline=DEADLINE)
    approval = await approvals.wait_for({"order_id": order_id}, timeout=DEADLINE)
    if approval is None:
        return f"order {order_id}: no answer before the deadline, cancelled"
    if not approval.approved:
        return f"order {order_id}: rejected ({approval.note or 'no reason given'})"
    return f"order {order_id}: approved, shipping"


queue = qanat.Queue(
    jobs=[place_order],
    pipes=[approvals],
    storage=os.environ.get("QANAT_STORAGE", "sqlite:///approval.db"),
)
