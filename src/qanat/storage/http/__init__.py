"""The HTTP storage: the storage contract spoken to a ``qanat serve`` node.

``HttpStorage`` (``client``) is what ``storage="http://node:4000"`` opens; ``protocol``
and ``wire`` are shared with the node (``qanat.server.node``); ``tokens`` is where the
shared bearer token comes from.

``HttpStorage`` is imported on first use: it needs httpx (the ``qanat[http]`` extra),
and importing ``tokens`` (as every queue does) must not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qanat.storage.http.protocol import PROTOCOL

if TYPE_CHECKING:
    from qanat.storage.http.client import HttpStorage

__all__ = ["PROTOCOL", "HttpStorage"]


def __getattr__(name: str) -> Any:
    if name == "HttpStorage":
        from qanat.storage.http.client import HttpStorage

        return HttpStorage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
