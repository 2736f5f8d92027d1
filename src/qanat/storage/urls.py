"""Storage URLs in messages: a password is never printed."""

from __future__ import annotations

import urllib.parse


def redact(url: str) -> str:
    """The URL with its password replaced by ``***``."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return url
