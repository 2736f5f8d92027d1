"""Identifiers: sortable by creation time, unique without coordination."""

from __future__ import annotations

import os
import time


def new_id() -> str:
    """A 24-hex-digit id: 12 digits of milliseconds, then 12 random ones."""
    return f"{int(time.time() * 1000):012x}{os.urandom(6).hex()}"
