"""Who may talk to a server: the bind rule and the bearer token, one copy for the node,
its API, the dashboard and ``/metrics``.

Without a token a server must stay on loopback (anyone who can reach it could steer
every execution); with one, every request carries it. Tokens are compared in constant
time and never read from a URL's query by the API (a URL ends up in logs).
"""

from __future__ import annotations

import hmac
import ipaddress

from qanat.errors import ConfigurationError

# one copy, shared with the node's clients (``HttpStorage``), which sit below this layer
from qanat.storage.http.tokens import TOKEN_ENV, resolve_token

__all__ = ["TOKEN_ENV", "bearer", "check_bind", "is_loopback", "resolve_token", "token_matches"]


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``: addresses only this machine reaches."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything, so it is not loopback


def check_bind(host: str, token: str | None, *, what: str = "qanat serve") -> None:
    """Refuse to serve on a non-loopback address without a token, saying why."""
    if token is None and not is_loopback(host):
        raise ConfigurationError(
            f"{what}: refusing to bind {host} without a token: anyone who can reach that "
            f"address could read and steer every execution. Pass --token T (or set "
            f"{TOKEN_ENV}), or bind 127.0.0.1."
        )


def token_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented token with the server's."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, else None."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
