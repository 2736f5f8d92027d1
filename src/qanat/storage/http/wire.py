"""The node protocol's wire format: storage records as JSON, generically.

Records travel as JSON objects of their dataclass fields, found from the dataclass
itself (``dataclasses.fields``), so a field another part of qanat adds to a record
(``ExecutionRecord.trace``, say) crosses the wire without a change here. Decoding is
driven by the type hints of the record classes: a nested record (a checkpoint's step
and children, a finish's triggered executions) is rebuilt as its class, and a field
the other side does not know is ignored (a newer peer), one it leaves out takes its
default. JSON only (orjson), never pickle.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from qanat.storage import records

__all__ = ["decoder", "dumps", "loads", "to_plain"]

_OPTIONS = orjson.OPT_PASSTHROUGH_DATACLASS


def _default(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # by field name, through getattr: a property (CompletionEvent.data) is read too
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"cannot send a {type(value).__name__} to the node")


def dumps(value: Any) -> bytes:
    """JSON bytes of ``value`` (records, lists, dicts, sets, plain data)."""
    return orjson.dumps(value, default=_default, option=_OPTIONS)


def loads(data: bytes | str) -> Any:
    """Plain data from JSON bytes."""
    return orjson.loads(data)


def to_plain(value: Any) -> Any:
    """``value`` as plain JSON data (a record as a dict)."""
    return loads(dumps(value))


Decoder = Callable[[Any], Any]
_decoders: dict[Any, Decoder] = {}


def _identity(value: Any) -> Any:
    return value


def decoder(tp: Any) -> Decoder:
    """A function rebuilding a value of type ``tp`` (a record class, ``list[X]``, ``X |
    None``, ``dict[str, X]``, ``set[str]``, plain types) from its plain JSON data."""
    found = _decoders.get(tp)
    if found is None:
        found = _decoders[tp] = _build(tp)
    return found


def _build(tp: Any) -> Decoder:
    if isinstance(tp, str):
        tp = getattr(records, tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _record_decoder(tp)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            item = decoder(inner[0])
            if item is _identity:
                return _identity
            return lambda v: None if v is None else item(v)
        return _identity
    if origin in (list, Sequence, tuple) or origin is typing.get_origin(Sequence[int]):
        item = decoder(args[0]) if args else _identity
        if item is _identity:
            return list if origin is not tuple else tuple
        return lambda v: [item(x) for x in v]
    if origin in (set, frozenset):
        return set
    if origin is dict:
        item = decoder(args[1]) if len(args) == 2 else _identity
        if item is _identity:
            return _identity
        return lambda v: {k: item(x) for k, x in v.items()}
    return _identity


def _record_decoder(cls: type) -> Decoder:
    hints = typing.get_type_hints(cls, vars(records))
    names = frozenset(f.name for f in dataclasses.fields(cls))
    nested = {n: decoder(hints[n]) for n in names if decoder(hints[n]) is not _identity}

    def decode(value: Any) -> Any:
        if value is None:
            return None
        kw = {k: v for k, v in value.items() if k in names}
        for name, dec in nested.items():
            if name in kw:
                kw[name] = dec(kw[name])
        return cls(**kw)

    return decode
