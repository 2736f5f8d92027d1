"""The payload codec: how inputs, outputs, step results and event data become JSON.

qanat stores payloads as JSON text, never pickle. :class:`JsonCodec` (the default)
writes plain JSON data as is, and the Python values JSON has no type for as *tagged
objects*, such as ``{"$qanat": "datetime", "v": "2024-01-01T00:00:00+00:00"}``, so that
``loads(dumps(x))`` gives back a ``datetime``, ``date``, ``time``, ``timedelta``,
``UUID``, ``Decimal``, ``bytes``, ``bytearray``, ``set``, ``frozenset``, ``tuple``, a
non-finite ``float`` or an integer beyond 64 bits. A user dict that has a ``"$qanat"``
key of its own is escaped (``{"$qanat": "dict", "v": [[key, value], ...]}``) so that it
is never mistaken for a tag.

Pydantic models, dataclasses and enums are written as their plain JSON data and come
back from :meth:`JsonCodec.loads` as plain data; :func:`revive` turns that data back
into the annotated type (``revive(data, MyModel)``), which is what a job or step
annotated to return a model gets on replay.

A value of any other type raises :class:`TypeError` naming the type and where the value
was going (``"the result of step 'fetch'"``) at the moment it is stored.

Plain JSON data (``dict`` with ``str`` keys, ``list``, ``str``, ``int``, finite
``float``, ``bool``, ``None``) takes a fast path: one pass in Python that checks types
without copying, then a single C-level encoder call (``orjson``, a dependency; the
standard library's encoder is kept as an option to compare against).
"""

from __future__ import annotations

import base64
import dataclasses
import inspect
import json
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from types import ModuleType
from typing import Any, Protocol, runtime_checkable
from uuid import UUID

import orjson
from pydantic import BaseModel, TypeAdapter
from pydantic_core import PydanticSerializationError

__all__ = [
    "TAG",
    "Codec",
    "JsonCodec",
    "canonical",
    "default_codec",
    "revive",
]

TAG = "$qanat"
"""Key that marks a tagged object in stored JSON."""

_SUPPORTED = (
    "supported: JSON types, pydantic models, dataclasses, datetime, date, UUID, "
    "Decimal, bytes, set, tuple, Enum"
)


@runtime_checkable
class Codec(Protocol):
    """What qanat needs from a payload codec (``Queue(codec=...)``).

    ``dumps`` must raise :class:`TypeError` naming ``where`` (for example
    ``"the result of step 'fetch'"``) for a value it cannot store; ``loads`` must accept
    whatever ``dumps`` produced.
    """

    def dumps(self, value: Any, where: str = "value") -> str:
        """Encode ``value`` as text for storage."""
        ...

    def loads(self, text: str) -> Any:
        """Decode text produced by :meth:`dumps`."""
        ...


class _Unsupported(Exception):
    """Raised inside the encoder for a value it cannot store; carries the path to it."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what
        self.path: list[str] = []  # innermost first


# orjson reserves about ten times a string's length while it writes it, and parses with
# a buffer about twelve times the text's length: a 50 MB payload would peak near 600 MB.
# Above these sizes the standard library's encoder and decoder (about 1x) are used.
_BIG_STR = 1 << 20  # a str longer than this sends the payload to the standard encoder
_BIG_TEXT = 1 << 20  # JSON text longer than this is parsed by the standard decoder


class _BigString(Exception):
    """Raised inside the encoder pass for a str over ``_BIG_STR``."""


# Integers beyond 64 bits are tagged: orjson would read them back as floats.
_INT_MIN = -(2**63)
_INT_MAX = 2**63 - 1


def _int_tag(v: int) -> dict[str, Any]:
    return {TAG: "int", "v": str(v)}


def _float_tag(v: float) -> dict[str, Any]:
    return {TAG: "float", "v": repr(v)}  # 'nan', 'inf', '-inf'


# ---------------------------------------------------------------------------
# Encoding: Python value -> JSON-native data (same object when already native)
# ---------------------------------------------------------------------------


def _enc(v: Any, canon: bool | None) -> Any:
    """Return JSON-native data for ``v``; ``v`` itself when it already is.

    ``canon``: True for canonical data (sorted sets); False for plain data bound for
    orjson, where a str over ``_BIG_STR`` raises ``_BigString``; None for plain data
    bound for the standard library's encoder (any size).
    """
    t = type(v)
    if t is str:
        if canon is False and len(v) > _BIG_STR:
            raise _BigString
        return v
    if t is bool or v is None:
        return v
    if t is int:
        return v if _INT_MIN <= v <= _INT_MAX else _int_tag(v)
    if t is dict:
        return _enc_dict(v, canon)
    if t is list:
        return _enc_list(v, canon)
    if t is float:
        return v if v - v == 0.0 else _float_tag(v)
    encoder = _EXACT.get(t)
    if encoder is not None:
        return encoder(v, canon)
    return _enc_other(v, canon)


def _enc_dict(d: dict[Any, Any], canon: bool | None) -> Any:
    out: dict[str, Any] | None = None
    k: Any = None
    try:
        for k, x in d.items():
            if type(k) is not str:
                break
            tx = type(x)
            if tx is str:
                if canon is False and len(x) > _BIG_STR:
                    raise _BigString
                continue
            if (
                tx is bool
                or x is None
                or (tx is int and _INT_MIN <= x <= _INT_MAX)
                or (tx is float and x - x == 0.0)
            ):
                continue
            y = _enc(x, canon)
            if y is not x:
                if out is None:
                    out = dict(d)
                out[k] = y
        else:
            result = d if out is None else out
            if TAG in result:
                return _escape_dict(result, canon)
            return result
    except _Unsupported as exc:
        exc.path.append(f"[{k!r}]")
        raise
    return _enc_dict_slow(d, canon)  # some key is not exactly a str


def _enc_dict_slow(d: dict[Any, Any], canon: bool | None) -> Any:
    """A dict with some key that is not exactly ``str`` (a ``str`` subclass is allowed)."""
    out: dict[str, Any] = {}
    for k, x in d.items():
        if type(k) is str:
            key = k
        elif isinstance(k, str):
            key = str.__str__(k)  # StrEnum / str subclass: its plain text
        else:
            exc = _Unsupported(
                f"dict key {k!r} of type {type(k).__name__!r} is not a string "
                "(JSON object keys must be strings)"
            )
            raise exc
        try:
            out[key] = _enc(x, canon)
        except _Unsupported as exc:
            exc.path.append(f"[{k!r}]")
            raise
    if TAG in out:
        return _escape_dict(out, canon)
    return out


def _escape_dict(d: dict[str, Any], canon: bool | None) -> dict[str, Any]:
    """Wrap user data that has a ``$qanat`` key so that it is not read as a tag.

    The values are already encoded; the dict is stored as a list of pairs, which a
    decoder never mistakes for a tag.
    """
    pairs = [[k, x] for k, x in d.items()]
    if canon:
        pairs.sort(key=lambda p: str(p[0]))
    return {TAG: "dict", "v": pairs}


def _enc_list(v: list[Any], canon: bool | None) -> Any:
    out: list[Any] | None = None
    i = 0
    try:
        for i, x in enumerate(v):
            tx = type(x)
            if tx is str:
                if canon is False and len(x) > _BIG_STR:
                    raise _BigString
                continue
            if (
                tx is bool
                or x is None
                or (tx is int and _INT_MIN <= x <= _INT_MAX)
                or (tx is float and x - x == 0.0)
            ):
                continue
            y = _enc(x, canon)
            if y is not x:
                if out is None:
                    out = list(v)
                out[i] = y
    except _Unsupported as exc:
        exc.path.append(f"[{i}]")
        raise
    return v if out is None else out


def _enc_items(v: Any, canon: bool | None) -> list[Any]:
    out: list[Any] = []
    for i, x in enumerate(v):
        try:
            out.append(_enc(x, canon))
        except _Unsupported as exc:
            exc.path.append(f"[{i}]")
            raise
    return out


def _canonical_text(v: Any) -> str:
    return _CANONICAL_ENCODER.encode(v)


def _enc_tuple(v: Any, canon: bool | None) -> Any:
    return {TAG: "tuple", "v": _enc_items(v, canon)}


def _enc_set(v: Any, canon: bool | None) -> Any:
    items = _enc_items(v, canon)
    if canon:
        items.sort(key=_canonical_text)
    return {TAG: "set", "v": items}


def _enc_frozenset(v: Any, canon: bool | None) -> Any:
    items = _enc_items(v, canon)
    if canon:
        items.sort(key=_canonical_text)
    return {TAG: "frozenset", "v": items}


def _enc_datetime(v: datetime, canon: bool | None) -> Any:
    return {TAG: "datetime", "v": v.isoformat()}


def _enc_date(v: date, canon: bool | None) -> Any:
    return {TAG: "date", "v": v.isoformat()}


def _enc_time(v: time, canon: bool | None) -> Any:
    return {TAG: "time", "v": v.isoformat()}


def _enc_timedelta(v: timedelta, canon: bool | None) -> Any:
    return {TAG: "timedelta", "v": [v.days, v.seconds, v.microseconds]}


def _enc_uuid(v: UUID, canon: bool | None) -> Any:
    return {TAG: "uuid", "v": str(v)}


def _enc_decimal(v: Decimal, canon: bool | None) -> Any:
    return {TAG: "decimal", "v": str(v)}


def _enc_bytes(v: bytes, canon: bool | None) -> Any:
    if canon is False and len(v) > _BIG_STR // 4 * 3:  # its base64 text is a big str
        raise _BigString
    return {TAG: "bytes", "v": base64.b64encode(v).decode("ascii")}


def _enc_bytearray(v: bytearray, canon: bool | None) -> Any:
    if canon is False and len(v) > _BIG_STR // 4 * 3:
        raise _BigString
    return {TAG: "bytearray", "v": base64.b64encode(v).decode("ascii")}


_EXACT: dict[type, Callable[[Any, bool | None], Any]] = {
    tuple: _enc_tuple,
    set: _enc_set,
    frozenset: _enc_frozenset,
    datetime: _enc_datetime,
    date: _enc_date,
    time: _enc_time,
    timedelta: _enc_timedelta,
    UUID: _enc_uuid,
    Decimal: _enc_decimal,
    bytes: _enc_bytes,
    bytearray: _enc_bytearray,
}

# Checked in order for subclasses (datetime before date: a datetime is a date).
_BY_BASE: tuple[tuple[type, Callable[[Any, bool | None], Any]], ...] = (
    (datetime, _enc_datetime),
    (date, _enc_date),
    (time, _enc_time),
    (timedelta, _enc_timedelta),
    (UUID, _enc_uuid),
    (Decimal, _enc_decimal),
    (bytes, _enc_bytes),
    (bytearray, _enc_bytearray),
    (tuple, _enc_tuple),  # named tuples
    (frozenset, _enc_frozenset),
    (set, _enc_set),
)


def _enc_other(v: Any, canon: bool | None) -> Any:
    """Values whose exact type is not a JSON type nor in ``_EXACT``."""
    if isinstance(v, Enum):
        try:
            return _enc(v.value, canon)
        except _Unsupported as exc:
            exc.path.append(".value")
            raise
    if isinstance(v, BaseModel):
        try:
            data = v.model_dump(mode="json", by_alias=True, round_trip=True)
        except PydanticSerializationError as err:
            raise _Unsupported(
                f"pydantic model {type(v).__name__!r} could not be serialized ({err})"
            ) from None
        return _enc(data, canon)
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(v):
            try:
                out[f.name] = _enc(getattr(v, f.name), canon)
            except _Unsupported as exc:
                exc.path.append(f".{f.name}")
                raise
        return out
    for base, encoder in _BY_BASE:
        if isinstance(v, base):
            return encoder(v, canon)
    if isinstance(v, str):
        return str.__str__(v)
    if isinstance(v, int):
        return _enc(int.__index__(v), canon)
    if isinstance(v, float):
        return _enc(float.__float__(v), canon)
    if isinstance(v, dict):
        return _enc_dict(dict(v), canon)
    if isinstance(v, list):
        return _enc_list(list(v), canon)
    raise _Unsupported(f"object of type {type(v).__name__!r}")


def _encode(value: Any, where: str, canon: bool | None) -> Any:
    """Run the encoder pass, turning its internal errors into a clear ``TypeError``."""
    try:
        return _enc(value, canon)
    except _Unsupported as exc:
        path = "".join(reversed(exc.path))
        at = f" (at {path})" if path else ""
        if exc.what.startswith("object of type"):
            detail = f"{exc.what}{at} is not serializable"
        else:
            detail = f"{exc.what}{at}"
        raise TypeError(f"cannot store {where} as JSON: {detail} ({_SUPPORTED})") from None
    except RecursionError:
        raise TypeError(
            f"cannot store {where} as JSON: it contains a circular reference "
            "or is nested too deeply"
        ) from None


# ---------------------------------------------------------------------------
# Decoding: JSON data -> Python values (tags revived)
# ---------------------------------------------------------------------------


def _dec_set(v: Any) -> Any:
    try:
        return set(v)
    except TypeError:  # items became unhashable plain data (e.g. frozen models)
        return v


def _dec_frozenset(v: Any) -> Any:
    try:
        return frozenset(v)
    except TypeError:
        return v


_DECODERS: dict[str, Callable[[Any], Any]] = {
    "datetime": datetime.fromisoformat,
    "date": date.fromisoformat,
    "time": time.fromisoformat,
    "timedelta": lambda v: timedelta(days=v[0], seconds=v[1], microseconds=v[2]),
    "uuid": UUID,
    "decimal": Decimal,
    "bytes": lambda v: base64.b64decode(v, validate=True),
    "bytearray": lambda v: bytearray(base64.b64decode(v, validate=True)),
    "tuple": tuple,
    "set": _dec_set,
    "frozenset": _dec_frozenset,
    "float": float,
    "int": int,
    "dict": lambda v: {k: x for k, x in v},
}


def _dec(v: Any) -> Any:
    """Revive tagged objects in freshly parsed JSON data (mutated in place)."""
    t = type(v)
    if t is dict:
        if TAG in v:
            return _dec_tag(v)
        for k, x in v.items():
            tx = type(x)
            if tx is dict or tx is list:
                y = _dec(x)
                if y is not x:
                    v[k] = y
        return v
    if t is list:
        for i, x in enumerate(v):
            tx = type(x)
            if tx is dict or tx is list:
                y = _dec(x)
                if y is not x:
                    v[i] = y
        return v
    return v


def _dec_tag(d: dict[str, Any]) -> Any:
    tag = d[TAG]
    decoder = _DECODERS.get(tag) if type(tag) is str else None
    if decoder is None or "v" not in d:
        raise ValueError(
            f"cannot decode stored JSON: unknown tagged object {d!r} "
            "(written by a newer version of qanat?)"
        )
    inner = d["v"]
    if tag == "dict":
        return {k: _dec(x) for k, x in inner}
    return decoder(_dec(inner))


# ---------------------------------------------------------------------------
# The codec
# ---------------------------------------------------------------------------

_STD_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False)
_CANONICAL_ENCODER = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=True, allow_nan=False, sort_keys=True
)
_UTF8_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_TAG_MARK = f'"{TAG}"'


def _dumps_big(data: Any) -> str:
    """JSON text of data holding a big str, in about its size (orjson: ten times).

    Non-ASCII text is kept as UTF-8, as orjson writes it, unless it holds lone
    surrogates, which only the ASCII encoder can escape."""
    text = _UTF8_ENCODER.encode(data)
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            return _STD_ENCODER.encode(data)
    return text


class JsonCodec:
    """The default codec: JSON text, with tagged objects for non-JSON Python types.

    Args:
        use_orjson: use ``orjson`` for speed (the default; ``False``: the standard
            library's encoder). The two
            encoders differ only in how they write non-ASCII text (the standard library
            escapes it as ``\\uXXXX``); either decoder reads what either encoder wrote.
    """

    name = "json"

    def __init__(self, *, use_orjson: bool | None = None) -> None:
        self._orjson: ModuleType | None = orjson if use_orjson is not False else None

    def dumps(self, value: Any, where: str = "value") -> str:
        """Encode ``value`` as compact JSON text.

        Args:
            value: the payload.
            where: what the value is, for the error message
                (``"the result of step 'fetch'"``).

        Raises:
            TypeError: the value (or something inside it) has a type the codec does not
                store, or a dict has a key that is not a string. The message names the
                type, ``where``, and the path inside the value.
        """
        if self._orjson is None:
            return _STD_ENCODER.encode(_encode(value, where, canon=None))
        try:
            data = _encode(value, where, canon=False)
        except _BigString:
            return _dumps_big(_encode(value, where, canon=None))
        try:
            text: str = self._orjson.dumps(data).decode()
            return text
        except TypeError:  # lone surrogates in a str: the standard library escapes them
            return _STD_ENCODER.encode(data)

    def loads(self, text: str) -> Any:
        """Decode JSON text written by :meth:`dumps` (tagged objects revived).

        Models, dataclasses and enums come back as plain data: see :func:`revive`.

        Raises:
            ValueError: the text is not JSON (:class:`json.JSONDecodeError`) or holds a
                tagged object this version does not know.
        """
        data: Any
        if self._orjson is not None and len(text) <= _BIG_TEXT:
            try:
                data = self._orjson.loads(text)
            except self._orjson.JSONDecodeError:
                data = json.loads(text)
        else:
            data = json.loads(text)
        if _TAG_MARK in text:
            return _dec(data)
        return data

    def canonical(self, value: Any, where: str = "value") -> str:
        """Deterministic JSON for ``value``: sorted keys, sorted sets, ASCII only.

        Equal payloads give equal text (used to match inputs for ``cache=``).
        """
        return _CANONICAL_ENCODER.encode(_encode(value, where, canon=True))

    def __repr__(self) -> str:
        return f"JsonCodec(use_orjson={self._orjson is not None})"


default_codec = JsonCodec()
"""The codec used when a queue names none."""


def canonical(value: Any, where: str = "value") -> str:
    """Deterministic JSON text of ``value`` (sorted keys), for matching equal payloads.

    Raises:
        TypeError: as :meth:`JsonCodec.dumps`.
    """
    return _CANONICAL_ENCODER.encode(_encode(value, where, canon=True))


# ---------------------------------------------------------------------------
# Reviving plain data into annotated types
# ---------------------------------------------------------------------------

_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}
_ADAPTERS_MAX = 4096


def _adapter(annotation: Any) -> TypeAdapter[Any]:
    try:
        adapter = _ADAPTERS.get(annotation)
    except TypeError:  # unhashable annotation: no caching
        return TypeAdapter(annotation)
    if adapter is None:
        adapter = TypeAdapter(annotation)
        if len(_ADAPTERS) >= _ADAPTERS_MAX:
            _ADAPTERS.clear()
        _ADAPTERS[annotation] = adapter
    return adapter


def revive(value: Any, annotation: Any) -> Any:
    """Turn decoded plain data back into the type ``annotation`` names.

    ``revive({"path": "a", "user_id": 1}, Upload)`` returns an ``Upload``; it works
    for pydantic models, dataclasses, enums, and any type pydantic validates
    (``list[Model]``, ``dict[str, Model]``, ``Model | None``...). With no annotation
    (``None``, ``Any``, ``inspect.Parameter.empty``) the value is returned unchanged.

    Raises:
        pydantic.ValidationError: the data does not fit the annotation.
    """
    if annotation is None or annotation is Any or annotation is inspect.Parameter.empty:
        return value
    return _adapter(annotation).validate_python(value)


dumps = default_codec.dumps
"""Encode with the default codec (see :meth:`JsonCodec.dumps`)."""
loads = default_codec.loads
"""Decode with the default codec (see :meth:`JsonCodec.loads`)."""
