"""What the execution page draws: the steps as a Gantt (bars placed in SVG user units,
no inline style) and the job's source with each step's line marked."""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup

from qanat.failures import error_fields
from qanat.storage.base import ExecutionRecord, StepRecord

#: SVG geometry of one Gantt row (user units; the CSS scales the whole drawing).
ROW = 18
LABEL = 180
WIDTH = 1000


@dataclass(frozen=True)
class Bar:
    """One step in the Gantt. ``rect``, ``label_y``, ``start`` and ``took`` are made here
    from numbers only (so marked safe: a 1,000-step page escapes only what jobs made)."""

    key: str
    name: str
    kind: str
    status: str
    attempts: int
    start: Markup  # "+1.2s" after the execution started
    took: Markup
    rect: Markup  # the bar's x, y, width and height attributes
    label_y: Markup
    error: str | None
    line: int | None
    title: str  # the tooltip, as text (escaped once by the template)
    label: str  # the key, shortened for the row's label


@dataclass(frozen=True)
class Gantt:
    """The drawing: its bars, the height of the SVG and the time the x axis spans."""

    bars: list[Bar]
    height: int
    span: float
    ticks: list[tuple[float, str]]


def gantt(rec: ExecutionRecord, steps: list[StepRecord], lines: dict[str, int]) -> Gantt:
    """Place each step on a time axis from the execution's start to its last step's end
    (or completion)."""
    if not steps:
        return Gantt([], ROW, 0.0, [])
    origin = min([s.started_at for s in steps] + ([rec.started_at] if rec.started_at else []))
    end = max([s.finished_at for s in steps] + ([rec.completed_at] if rec.completed_at else []))
    span = max(end - origin, 1e-3)
    scale = (WIDTH - LABEL) / span
    bars = []
    for i, s in enumerate(steps):
        start = s.started_at - origin
        duration = max(s.finished_at - s.started_at, 0.0)
        x, width, y = LABEL + start * scale, max(duration * scale, 1.5), i * ROW
        bars.append(
            Bar(
                s.key,
                s.name,
                s.kind,
                s.status,
                s.attempts,
                Markup("+" + seconds(start)),
                Markup(seconds(duration)),
                Markup(f'x="{x:.1f}" y="{y + 3}" width="{width:.1f}" height="12"'),
                Markup(str(y + 13)),
                error := _message(s.error),
                line := lines.get(s.name),
                f"{s.key} ({s.kind}): {s.status}, started +{seconds(start)}, took "
                f"{seconds(duration)}, {s.attempts} attempt(s)"
                + (f", {error}" if error else "")
                + (f", line {line}" if line else ""),
                s.key if len(s.key) <= 26 else s.key[:23] + "...",
            )
        )
    ticks = [(LABEL + f * (WIDTH - LABEL), seconds(f * span)) for f in (0, 0.25, 0.5, 0.75, 1)]
    return Gantt(bars, len(steps) * ROW + ROW, span, ticks)


def _message(error: str | None) -> str | None:
    if not error:
        return None
    fields = error_fields(error)
    return f"{fields.get('type', 'Error')}: {fields.get('message', '')}"


def seconds(value: float) -> str:
    """A duration for people: 850ms, 12.3s, 4m05s, 2h03m."""
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 60:
        return f"{value:.1f}s"
    if value < 3600:
        return f"{int(value // 60)}m{int(value % 60):02d}s"
    return f"{int(value // 3600)}h{int(value % 3600 // 60):02d}m"


@dataclass(frozen=True)
class Source:
    """A job's source: its file, first line number and lines; ``marks`` maps a line
    number to the names of the steps found on it."""

    file: str
    first: int
    lines: list[tuple[int, str]]
    marks: dict[int, list[str]]


def source_of(handler: Any, names: list[str]) -> Source | None:
    """The handler's source (where the job is registered) with the line of each step
    name marked: the first line that names it as a string literal, else one calling it
    (``sleep(``, ``lookup.run(``). None when the source cannot be read."""
    fn = inspect.unwrap(handler)
    try:
        text, first = inspect.getsourcelines(fn)
        file = inspect.getsourcefile(fn) or "?"
    except (OSError, TypeError):
        return None
    numbered = [(first + i, line.rstrip("\n")) for i, line in enumerate(text)]
    marks: dict[int, list[str]] = {}
    for name in dict.fromkeys(names):
        line = _line_of(numbered, name)
        if line is not None:
            marks.setdefault(line, []).append(name)
    return Source(file, first, numbered, marks)


def step_lines(src: Source | None) -> dict[str, int]:
    """Step name -> its marked line."""
    if src is None:
        return {}
    return {name: line for line, names in src.marks.items() for name in names}


def _line_of(lines: list[tuple[int, str]], name: str) -> int | None:
    literal = re.compile(r"""["']""" + re.escape(name) + r"""["']""")
    call = re.compile(r"\b" + re.escape(name) + r"\b\s*(\.\w+\s*)?\(")
    for pattern in (literal, call):
        for n, text in lines:
            if pattern.search(text) and not text.lstrip().startswith("#"):
                return n
    return None
