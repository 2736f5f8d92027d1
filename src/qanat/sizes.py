"""Byte sizes: ``"512MB"``, ``"2 GB"``, ``"64k"``, or a number of bytes."""

from __future__ import annotations

import re

from qanat.errors import PayloadTooLarge

__all__ = ["SizeLike", "check_size", "format_size", "parse_size"]

SizeLike = int | str
"""Anything :func:`parse_size` accepts: bytes as an int, or a string with a unit."""

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1024**4,
    "tib": 1024**4,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*")


def parse_size(value: SizeLike, *, what: str = "size") -> int:
    """Bytes in ``value``; units are binary (``"1MB"`` is 1,048,576 bytes).

    Raises:
        ValueError: naming ``what`` and the value, for anything that is not a
            positive size (``"3 lightyears"``, ``-1``, ``True``).
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(
            f"{what} must be a number of bytes or a string like '512MB', got {value!r}"
        )
    if isinstance(value, int):
        n = value
    else:
        m = _SIZE.fullmatch(value)
        unit = m.group(2).lower() if m else None
        if m is None or unit not in _UNITS:
            raise ValueError(
                f"{what}: {value!r} is not a size (use bytes or a unit: B, KB, MB, GB, TB)"
            )
        n = int(float(m.group(1)) * _UNITS[unit])
    if n <= 0:
        raise ValueError(f"{what} must be positive, got {value!r}")
    return n


def format_size(n: int) -> str:
    """``n`` bytes the way a person reads them: ``"16 MB"``, ``"1.5 KB"``, ``"12 B"``."""
    for unit, size in (("TB", 1024**4), ("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if n >= size:
            return f"{n / size:.4g} {unit}"
    return f"{n} B"


def check_size(text: str, limit: int | None, where: str) -> str:
    """``text``, unless its UTF-8 size is over ``limit`` bytes (``Queue(max_payload=)``).

    Cheap where it runs (every input, output, step result and event): the length and
    the ASCII flag of a str are stored, and a character is 1 to 4 bytes, so non-ASCII
    text is encoded to count its bytes only when its length alone cannot tell.

    Raises:
        PayloadTooLarge: naming ``where``, the size and the limit.
    """
    if limit is None or len(text) * 4 <= limit:
        return text
    size = len(text) if text.isascii() else len(text.encode())  # isascii: a flag, O(1)
    if size > limit:
        raise PayloadTooLarge(
            f"{where} is {format_size(size)} ({size:,} bytes of JSON), over the limit of "
            f"{format_size(limit)} (Queue(max_payload=))"
        )
    return text
