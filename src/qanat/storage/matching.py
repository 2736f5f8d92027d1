"""Dict matches of ``pipe.wait_for``, reduced to an indexable (shape, value) pair.

A match such as ``{"order_id": 7, "customer": {"tier": "gold"}}`` has the *shape*
``[["customer", "tier"], ["order_id"]]`` (its sorted key paths; nested dicts are walked)
and the *value* ``["gold", 7]`` (what it expects at those paths), both as canonical JSON
text. An event matches when its data, projected onto the shape, gives the same value
text. Storage keeps waiters indexed by ``(pipe, shape, value)``: a send computes one
projection per distinct shape waited on for its pipe and looks the rest up by index,
never scanning waiters or stored events.
"""

from __future__ import annotations

import json
from typing import Any

_MISSING = object()


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _paths(
    match: dict[str, Any], prefix: tuple[str, ...], out: list[tuple[tuple[str, ...], Any]]
) -> None:
    for k, v in match.items():
        if not isinstance(k, str):
            raise TypeError(f"wait_for match keys must be strings, got {k!r}")
        path = (*prefix, k)
        if isinstance(v, dict) and v:
            _paths(v, path, out)
        else:
            out.append((path, v))


def shape_and_value(match: dict[str, Any]) -> tuple[str, str]:
    """The (shape, value) texts of a JSON-able dict match."""
    leaves: list[tuple[tuple[str, ...], Any]] = []
    _paths(match, (), leaves)
    leaves.sort(key=lambda pv: pv[0])
    return _canon([list(p) for p, _ in leaves]), _canon([v for _, v in leaves])


def project(data: Any, shape: str) -> str | None:
    """The value text of ``data`` on ``shape``; None when a path is missing."""
    values = []
    for path in json.loads(shape):
        node = data
        for k in path:
            if not isinstance(node, dict):
                return None
            node = node.get(k, _MISSING)
            if node is _MISSING:
                return None
        values.append(node)
    return _canon(values)


def match_of(shape: str, value: str) -> dict[str, Any]:
    """The dict match a stored (shape, value) pair came from (``shape_and_value`` undone)."""
    out: dict[str, Any] = {}
    for path, v in zip(json.loads(shape), json.loads(value), strict=True):
        node = out
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = v
    return out
