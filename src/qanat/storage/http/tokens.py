"""The bearer token a node and its clients share: one copy of where it comes from."""

from __future__ import annotations

import os

#: The environment variable a server and its clients read the token from.
TOKEN_ENV = "QANAT_TOKEN"


def resolve_token(token: str | None) -> str | None:
    """The token given, else ``$QANAT_TOKEN``, else None (an empty string counts as none)."""
    value = token if token is not None else os.environ.get(TOKEN_ENV)
    return value or None
