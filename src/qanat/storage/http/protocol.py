"""What the node protocol is made of, shared by the client (``HttpStorage``) and the
node (``qanat.server.node``): its version, paths, the storage methods it carries and
which of them are fenced reports.

Arguments and results are typed by the signatures of ``qanat.storage.base.Storage``
itself: the node decodes a call's arguments, and the client its result, from the
type hints of the contract method of that name, so the two cannot drift apart.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

from qanat.storage import base, records
from qanat.storage.http.wire import decoder

#: Bumped on any change a peer of the previous version would misread.
PROTOCOL = 1
PREFIX = "/node/v1"
#: The node's clock (its storage's ``clock()``), on every answer, for the clients' offset.
NOW_HEADER = "x-qanat-now"
#: How long the node holds a ``watch`` long poll with nothing to say.
WATCH_HOLD = 25.0
#: At most this many execution ids in a ``watch`` (``ids=``): the executions a client
#: waits for, whose records the node sends with the change (more: read separately).
WATCH_IDS = 64

#: Worker writes for one execution, fenced by its claim: batched into ``/report``; a
#: refused one is answered ``409`` (for that item) and changed nothing.
REPORTS = frozenset(
    {
        "checkpoint",
        "finish",
        "suspend",
        "mark",
        "enter_step",
        "set_progress",
        "append_logs",
        "wait",
        "end_wait",
        "release",
    }
)

#: Every contract method the node answers (never an arbitrary attribute of storage).
METHODS = frozenset(
    name
    for name, fn in vars(base.Storage).items()
    if inspect.iscoroutinefunction(fn)
    and not name.startswith("_")
    and name not in ("open", "close")
)


class Signature:
    """The wire view of one contract method: argument decoders and the result's."""

    def __init__(self, name: str) -> None:
        fn = getattr(base.Storage, name)
        hints = typing.get_type_hints(fn, {**vars(records), **vars(base)})
        params = list(inspect.signature(fn).parameters.values())[1:]
        self.name = name
        self.params = [p.name for p in params]
        self.required = frozenset(p.name for p in params if p.default is inspect.Parameter.empty)
        self.args: dict[str, Callable[[Any], Any]] = {
            p.name: decoder(hints[p.name]) for p in params
        }
        self.result = decoder(hints["return"])


_signatures: dict[str, Signature] = {}


def signature(name: str) -> Signature:
    """The signature of contract method ``name`` (KeyError if the protocol lacks it)."""
    sig = _signatures.get(name)
    if sig is None:
        if name not in METHODS:
            raise KeyError(name)
        sig = _signatures[name] = Signature(name)
    return sig


def refused(name: str, result: Any) -> bool:
    """Whether a report's result says the worker no longer holds the execution (409)."""
    if name in ("checkpoint", "end_wait"):
        return result is not None and result != "paused"
    if name == "wait":
        return result.stop is not None and result.stop != "paused"
    if name in ("finish", "suspend", "mark", "enter_step", "set_progress"):
        return result is False
    return False


def lease_id(owner: str, claims: int) -> str:
    """The opaque lease id of one claim: its owner and the execution's claim count."""
    return f"{claims}.{owner}"


def parse_lease(lease: str) -> tuple[int, str] | None:
    """``(claims, owner)`` of a lease id, or None if it is not one."""
    head, _, owner = lease.partition(".")
    if not owner or not head.isdigit():
        return None
    return int(head), owner
