"""Commands packed by hiredis: redis-py's asyncio connection builds the RESP text of a
command in Python, one ``encode`` per argument, and qanat's batched script calls
(``finish_many``, ``checkpoint_many``, a claim's arguments) carry hundreds of them: a
300-argument call took 172 µs to pack in Python against 29 µs with ``hiredis`` (a
pinned dependency of the ``redis`` extra) on this machine. The bytes are the same
(strings as UTF-8, numbers as redis-py writes them); anything hiredis cannot pack
(a command name with a space in it, which redis-py splits, or an unusual argument
type) goes the Python way.
"""

from __future__ import annotations

from typing import Any

import hiredis

_made: dict[type[Any], type[Any]] = {}


def fast_packing(base: type[Any]) -> type[Any]:
    """A subclass of the connection class ``base`` that packs commands with hiredis
    (one per base class, made once)."""
    made = _made.get(base)
    if made is not None:
        return made

    def pack_command(self: Any, *args: Any) -> list[bytes]:
        first = args[0] if args else None
        if isinstance(first, str) and " " not in first:
            try:
                return [hiredis.pack_command(args)]
            except TypeError:
                pass
        packed: list[bytes] = base.pack_command(self, *args)
        return packed

    made = _made[base] = type(
        f"HiredisPacked{base.__name__}", (base,), {"pack_command": pack_command}
    )
    return made
