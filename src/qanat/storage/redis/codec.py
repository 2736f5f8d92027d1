"""Records as Redis hash fields, generically from the dataclass fields.

An execution is a hash with one field per :class:`ExecutionRecord` field; a field that
is None is absent. Strings are stored as they are, numbers as ``repr`` (exact), booleans
as ``1``/``0``. The field list and each field's type come from the dataclass, so a field
another part of qanat adds (e.g. ``trace: str | None``) is stored and read back with no
change here. Fields starting with ``_`` are the storage's own (``_ih``: a hash of the
input for ``find_cached``; ``_items``: items a batch collected since it was stored).
Steps, log lines, failed triggers and workers are JSON texts.
"""

from __future__ import annotations

import hashlib
import json
import operator
from collections.abc import Callable, Sequence
from dataclasses import MISSING, fields
from typing import Any

from qanat.storage.base import ExecutionRecord, LogRecord, StepRecord, TriggerFailure, Waiter
from qanat.storage.flow import FlowSpec

_Decode = Callable[[str], Any]


def _decoder(annotation: str) -> _Decode:
    kinds = {part.strip() for part in annotation.split("|")} - {"None"}
    if kinds == {"bool"}:
        return lambda v: v == "1"
    if kinds == {"int"}:
        return int
    if kinds == {"float"}:
        return float
    return str


def _encode(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(value)
    return str(value)


class RecordCodec:
    """Encodes and decodes the records of one dataclass (the field list is read once)."""

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.names = tuple(f.name for f in fields(cls))
        self.decoders: dict[str, _Decode] = {f.name: _decoder(str(f.type)) for f in fields(cls)}
        self.required = tuple(
            f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
        )
        #: absent from a hash means None for these (whatever their default)
        self.nullable = tuple(f.name for f in fields(cls) if "None" in str(f.type))
        #: the values of the fields a hash leaves out: None where it may be, else "" for
        #: a required one
        self.absent: dict[str, Any] = {
            **{name: "" for name in self.required},
            **{name: None for name in self.nullable},
        }
        self._values = operator.attrgetter(*self.names)

    def pairs(self, obj: Any) -> list[str]:
        """Field/value pairs of the fields that are not None."""
        out: list[str] = []
        for name, value in zip(self.names, self._values(obj), strict=True):
            if value is not None:
                out.append(name)
                out.append(value if type(value) is str else _encode(value))
        return out

    def decode(self, flat: Sequence[str]) -> Any:
        """The record of a flat ``HGETALL`` reply (unknown and ``_`` fields are skipped)."""
        values = dict(self.absent)
        decoders = self.decoders
        it = iter(flat)
        for name, raw in zip(it, it, strict=True):
            dec = decoders.get(name)
            if dec is not None:
                values[name] = raw if dec is str else dec(raw)
        return self.cls(**values)


EXECUTIONS = RecordCodec(ExecutionRecord)
WAITERS = RecordCodec(Waiter)


def input_hash(text: str) -> str:
    """The hash ``find_cached`` looks an input up by."""
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


def execution_args(rec: ExecutionRecord) -> list[str]:
    """A new record as script arguments: its batch item, a field count, field pairs."""
    pairs = EXECUTIONS.pairs(rec)
    pairs += ("_ih", input_hash(rec.input))
    item = ""
    if rec.flow is not None and '"batch"' in rec.flow:
        batch = FlowSpec.load(rec.flow).batch
        if batch is not None:
            item = json.dumps(json.loads(rec.input)[batch[3]][0], separators=(",", ":"))
    return [item, str(len(pairs) // 2), *pairs]


def execution(flat: Sequence[str]) -> ExecutionRecord:
    """An execution from its hash; a batch's collected items are merged into its input."""
    rec: ExecutionRecord = EXECUTIONS.decode(flat)
    if rec.flow is not None and "_items" in flat[::2]:
        items = flat[flat[::2].index("_items") * 2 + 1]
        batch = FlowSpec.load(rec.flow).batch
        if batch is not None and rec.input:
            data = json.loads(rec.input)
            data[batch[3]].extend(json.loads("[" + items + "]"))
            rec.input = json.dumps(data, separators=(",", ":"))
    return rec


def step_json(step: StepRecord) -> str:
    return json.dumps([getattr(step, n) for n in _STEP_FIELDS], separators=(",", ":"))


def step(text: str) -> StepRecord:
    return StepRecord(*json.loads(text))


def log_json(line: LogRecord) -> str:
    return json.dumps([getattr(line, n) for n in _LOG_FIELDS], separators=(",", ":"))


def log(text: str) -> LogRecord:
    return LogRecord(*json.loads(text))


def failure_json(f: TriggerFailure) -> str:
    return json.dumps({"source": f.source, "job": f.job, "error": f.error, "at": f.at})


def failure(text: str) -> TriggerFailure:
    d = json.loads(text)
    return TriggerFailure(d["source"], d["job"], d["error"], float(d["at"]))


_STEP_FIELDS = tuple(f.name for f in fields(StepRecord))
_LOG_FIELDS = tuple(f.name for f in fields(LogRecord))


def opt(value: str | float | None) -> str:
    """An optional script argument: "" for None, "=" and the text otherwise."""
    if value is None:
        return ""
    if isinstance(value, float):
        return "=" + repr(value)
    return "=" + str(value)


def unopt(value: str) -> str | None:
    return value[1:] if value else None
