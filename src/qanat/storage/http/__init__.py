"""The HTTP storage: the storage contract spoken to a ``qanat serve`` node.

``HttpStorage`` (``client``) is what ``storage="http://node:4000"`` opens; ``protocol``
and ``wire`` are shared with the node (``qanat.server.node``); ``tokens`` is where the
shared bearer token comes from.
"""

from __future__ import annotations

from qanat.storage.http.client import HttpStorage
from qanat.storage.http.protocol import PROTOCOL

__all__ = ["PROTOCOL", "HttpStorage"]
