"""The numbered schema scripts of each SQL backend (``storage/sql/<dialect>_NNN_name.sql``)."""

from __future__ import annotations

import functools
import importlib.resources
import re


@functools.cache
def numbered_scripts(prefix: str) -> tuple[tuple[int, str], ...]:
    """The scripts ``sql/<prefix>_NNN_name.sql``, in order; they must be numbered 1..n.

    Adding a migration is adding the next numbered file; it runs once, inside the
    transaction that records its number as ``schema_version`` in ``qanat_meta``.
    """
    found: list[tuple[int, str]] = []
    pattern = re.compile(rf"{re.escape(prefix)}_(\d+)_\w+\.sql")
    for entry in (importlib.resources.files("qanat.storage") / "sql").iterdir():
        m = pattern.fullmatch(entry.name)
        if m:
            found.append((int(m.group(1)), entry.read_text(encoding="utf-8")))
    found.sort()
    if [v for v, _ in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"qanat {prefix} migrations are not numbered 1..n: {found!r}")
    return tuple(found)
