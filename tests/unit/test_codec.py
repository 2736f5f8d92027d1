"""The JSON payload codec (qanat.codec)."""

from __future__ import annotations

import dataclasses
import inspect
import json
import socket
from collections import OrderedDict
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from enum import Enum, IntEnum, StrEnum
from typing import Annotated, Any, NamedTuple
from uuid import UUID

import pydantic
import pytest
from pydantic import BaseModel, ConfigDict, Field, computed_field

from qanat.codec import TAG, Codec, JsonCodec, canonical, default_codec, revive

CODECS = [
    pytest.param(JsonCodec(use_orjson=False), id="stdlib"),
    pytest.param(JsonCodec(use_orjson=True), id="orjson"),
]


@pytest.fixture(params=CODECS)
def codec(request: pytest.FixtureRequest) -> JsonCodec:
    result: JsonCodec = request.param
    return result


class Color(Enum):
    RED = "red"
    BLUE = "blue"


class Level(IntEnum):
    LOW = 1
    HIGH = 2


class Upload(BaseModel):
    path: str
    user_id: int
    at: datetime | None = None
    tags: tuple[str, ...] = ()


@dataclasses.dataclass
class Point:
    x: int
    y: int
    label: str = ""
    when: date | None = None


@dataclasses.dataclass(frozen=True)
class Key:
    name: str


class Pair(NamedTuple):
    a: int
    b: str


UTC_DT = datetime(2024, 1, 1, tzinfo=UTC)

# --------------------------------------------------------------------------- plain data


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -7,
        2**63 - 1,
        -(2**63),
        1.5,
        -0.0,
        1e300,
        "",
        "héllo ✓ 日本",
        "$qanat",
        [],
        {},
        [1, "a", None, True, 2.5],
        {"a": 1, "b": [1, 2, {"c": None}], "d": {"e": {"f": "g"}}},
        [[[]], [{}], {"x": [[1]]}],
    ],
)
def test_plain_json_round_trips(codec: JsonCodec, value: Any) -> None:
    text = codec.dumps(value)
    assert json.loads(text) == value  # plain data is plain JSON, no tags
    assert TAG not in text or value == "$qanat"
    result = codec.loads(text)
    assert result == value
    assert type(result) is type(value)


def test_dumps_is_compact(codec: JsonCodec) -> None:
    assert codec.dumps({"a": [1, 2], "b": None}) == '{"a":[1,2],"b":null}'


def test_default_codec_is_a_json_codec() -> None:
    assert isinstance(default_codec, JsonCodec)
    assert isinstance(default_codec, Codec)
    assert default_codec.loads(default_codec.dumps({"a": (1,)})) == {"a": (1,)}


def test_plain_data_is_not_copied(codec: JsonCodec) -> None:
    # the fast path must not mutate the caller's data
    value = {"a": [1, 2, (3, 4)], "b": {"c": {5}}}
    codec.dumps(value)
    assert value == {"a": [1, 2, (3, 4)], "b": {"c": {5}}}


# --------------------------------------------------------------------------- tagged types


@pytest.mark.parametrize(
    "value",
    [
        UTC_DT,
        datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
        datetime(2024, 1, 1, 12, 30),  # naive is stored as naive
        date(2024, 2, 29),
        time(12, 30, 15, 500),
        time(1, 2, tzinfo=UTC),
        timedelta(days=3, seconds=5, microseconds=7),
        timedelta(days=-1, microseconds=1),
        timedelta(0),
        UUID("12345678-1234-5678-1234-567812345678"),
        Decimal("1.10"),
        Decimal("-0"),
        Decimal("1E+3"),
        Decimal("Infinity"),
        b"",
        b"\x00\xffbytes",
        bytearray(b"abc"),
        {1, 2, 3},
        set(),
        frozenset({"a", "b"}),
        frozenset(),
        (1, "a", None),
        (),
        ((1, 2), (3, (4,))),
        2**64,
        -(2**63) - 1,
        10**40,
        float("inf"),
        float("-inf"),
    ],
    ids=repr,
)
def test_tagged_types_round_trip(codec: JsonCodec, value: Any) -> None:
    result = codec.loads(codec.dumps(value))
    assert type(result) is type(value)
    assert result == value
    if isinstance(value, datetime | time):
        assert result.utcoffset() == value.utcoffset()


def test_nan_round_trips(codec: JsonCodec) -> None:
    result = codec.loads(codec.dumps([float("nan")]))
    assert isinstance(result[0], float) and result[0] != result[0]


def test_tag_format(codec: JsonCodec) -> None:
    assert codec.dumps(UTC_DT) == '{"$qanat":"datetime","v":"2024-01-01T00:00:00+00:00"}'
    assert codec.dumps((1, 2)) == '{"$qanat":"tuple","v":[1,2]}'
    assert codec.dumps(b"\x00\xff") == '{"$qanat":"bytes","v":"AP8="}'
    assert codec.dumps(Decimal("1.10")) == '{"$qanat":"decimal","v":"1.10"}'


def test_nested_containers_round_trip(codec: JsonCodec) -> None:
    value = {
        "when": UTC_DT,
        "ids": [UUID(int=1), UUID(int=2)],
        "coords": [(1, 2), (3, 4)],
        "deep": {"a": [{"b": ({1, 2}, frozenset({"x"}))}], "c": date(2020, 1, 1)},
        "money": {"eur": Decimal("9.99")},
        "blob": [b"1", bytearray(b"2")],
        "plain": [1, "two", 3.0, None],
        "empty": {"t": (), "s": set()},
    }
    result = codec.loads(codec.dumps(value))
    assert result == value
    assert type(result["coords"][0]) is tuple
    assert type(result["deep"]["a"][0]["b"][1]) is frozenset
    assert type(result["blob"][1]) is bytearray


def test_subclasses_of_plain_types(codec: JsonCodec) -> None:
    class MyStr(str):
        pass

    class MyList(list[int]):
        pass

    value = {
        "s": MyStr("x"),
        "od": OrderedDict(b=1, a=2),
        "l": MyList([1, 2]),
        "p": Pair(1, "x"),
        "lvl": Level.HIGH,
    }
    result = codec.loads(codec.dumps(value))
    assert result == {"s": "x", "od": {"b": 1, "a": 2}, "l": [1, 2], "p": (1, "x"), "lvl": 2}
    assert type(result["s"]) is str
    assert type(result["p"]) is tuple


def test_str_subclass_keys_are_plain_strings(codec: JsonCodec) -> None:
    class Name(StrEnum):
        A = "a"

    class Key(str):
        def __str__(self) -> str:
            return "not the text"

    result = codec.loads(codec.dumps({Name.A: 1, Key("k"): 2}))
    assert result == {"a": 1, "k": 2}
    assert all(type(k) is str for k in result)


# --------------------------------------------------------------------------- escaping user tags


@pytest.mark.parametrize(
    "value",
    [
        {TAG: "datetime", "v": "2024-01-01T00:00:00+00:00"},
        {TAG: "tuple", "v": [1, 2]},
        {TAG: 1},
        {TAG: "nonsense", "other": (1, 2)},
        {TAG: {TAG: "dict", "v": []}},
        [{TAG: "set", "v": []}, {"inner": {TAG: "bytes", "v": "AP8="}}],
        {"v": {TAG: None}, TAG: [UTC_DT]},
    ],
    ids=repr,
)
def test_user_dicts_that_look_like_tags_round_trip(codec: JsonCodec, value: Any) -> None:
    result = codec.loads(codec.dumps(value))
    assert result == value


def test_user_tag_is_escaped_as_pairs(codec: JsonCodec) -> None:
    text = codec.dumps({TAG: "tuple", "v": [1]})
    assert text == '{"$qanat":"dict","v":[["$qanat","tuple"],["v",[1]]]}'


def test_unknown_tag_in_stored_text_is_an_error(codec: JsonCodec) -> None:
    with pytest.raises(ValueError, match="unknown tagged object"):
        codec.loads('{"$qanat":"frobnicate","v":1}')


def test_invalid_json_is_an_error(codec: JsonCodec) -> None:
    with pytest.raises(ValueError):
        codec.loads("{not json")


def test_lone_surrogates_round_trip(codec: JsonCodec) -> None:
    assert codec.loads(codec.dumps({"s": "a\ud800b"})) == {"s": "a\ud800b"}


def test_either_decoder_reads_either_encoder() -> None:
    value = {"t": (1, UTC_DT), "n": 2**70, "s": "日本", TAG: 1}
    fast, std = JsonCodec(use_orjson=True), JsonCodec(use_orjson=False)
    assert std.loads(fast.dumps(value)) == value
    assert fast.loads(std.dumps(value)) == value


# --------------------------------------------------------------------------- models, enums


def test_model_is_stored_as_plain_data(codec: JsonCodec) -> None:
    up = Upload(path="a.mp3", user_id=1, at=UTC_DT, tags=("x",))
    text = codec.dumps(up)
    assert json.loads(text) == {
        "path": "a.mp3",
        "user_id": 1,
        "at": "2024-01-01T00:00:00Z",
        "tags": ["x"],
    }
    data = codec.loads(text)
    assert isinstance(data, dict)
    assert revive(data, Upload) == up


def test_dataclass_is_stored_as_plain_data(codec: JsonCodec) -> None:
    p = Point(1, 2, "p", date(2020, 1, 2))
    data = codec.loads(codec.dumps(p))
    assert data == {"x": 1, "y": 2, "label": "p", "when": date(2020, 1, 2)}
    assert revive(data, Point) == p


def test_enum_is_stored_as_its_value(codec: JsonCodec) -> None:
    assert codec.dumps(Color.RED) == '"red"'
    assert codec.dumps(Level.LOW) == "1"
    assert revive(codec.loads(codec.dumps(Color.BLUE)), Color) is Color.BLUE


def test_revive_list_of_models(codec: JsonCodec) -> None:
    ups = [Upload(path="a", user_id=1), Upload(path="b", user_id=2, tags=("t",))]
    data = codec.loads(codec.dumps(ups))
    assert data == [
        {"path": "a", "user_id": 1, "at": None, "tags": []},
        {"path": "b", "user_id": 2, "at": None, "tags": ["t"]},
    ]
    assert revive(data, list[Upload]) == ups


def test_revive_nested_and_optional(codec: JsonCodec) -> None:
    value = {"first": Upload(path="a", user_id=1), "point": Point(1, 2)}
    data = codec.loads(codec.dumps(value))
    assert revive(data["first"], Upload | None) == value["first"]
    assert revive(None, Upload | None) is None
    assert revive(data, dict[str, Any]) == data
    assert revive({"p": data["point"]}, dict[str, Point]) == {"p": Point(1, 2)}


def test_revive_set_of_frozen_dataclasses(codec: JsonCodec) -> None:
    value = {Key("a"), Key("b")}
    data = codec.loads(codec.dumps(value))
    assert sorted(data, key=lambda d: d["name"]) == [{"name": "a"}, {"name": "b"}]
    assert revive(data, set[Key]) == value


def test_model_with_alias_and_computed_field_revives() -> None:
    class Strict(BaseModel):
        model_config = ConfigDict(extra="forbid")
        user_id: int = Field(alias="userId")

        @computed_field  # type: ignore[prop-decorator]
        @property
        def double(self) -> int:
            return self.user_id * 2

    m = Strict(userId=3)
    data = default_codec.loads(default_codec.dumps(m))
    assert data == {"userId": 3}
    assert revive(data, Strict) == m


@pytest.mark.parametrize("annotation", [None, Any, inspect.Parameter.empty])
def test_revive_without_annotation_returns_value(annotation: Any) -> None:
    value = {"a": [1, (2,)]}
    assert revive(value, annotation) is value


def test_revive_scalars_and_unhashable_annotation() -> None:
    assert revive("2024-01-01T00:00:00Z", datetime) == UTC_DT
    assert revive([1, 2], tuple[int, int]) == (1, 2)
    unhashable = Annotated[int, ["not hashable"]]
    assert revive("5", unhashable) == 5
    assert revive("6", unhashable) == 6


def test_revive_mismatch_raises_validation_error() -> None:
    with pytest.raises(pydantic.ValidationError):
        revive({"path": "a"}, Upload)


# --------------------------------------------------------------------------- errors


def test_unsupported_type_names_where_and_type(codec: JsonCodec) -> None:
    sock = socket.socket()
    try:
        with pytest.raises(TypeError) as info:
            codec.dumps(sock, where="the result of step 'fetch'")
    finally:
        sock.close()
    assert str(info.value) == (
        "cannot store the result of step 'fetch' as JSON: object of type 'socket' is not "
        "serializable (supported: JSON types, pydantic models, dataclasses, datetime, date, "
        "UUID, Decimal, bytes, set, tuple, Enum)"
    )


def test_default_where_is_value(codec: JsonCodec) -> None:
    with pytest.raises(TypeError, match=r"^cannot store value as JSON: object of type 'object'"):
        codec.dumps(object())


class Opaque:
    pass


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"a": [1, {"b": Opaque()}]}, "(at ['a'][1]['b'])"),
        ([0, (1, Opaque())], "(at [1][1])"),
        ({"p": Point(1, Opaque())}, "(at ['p'].y)"),  # type: ignore[arg-type]
        ({"x": {"k": Opaque()}}, "(at ['x']['k'])"),
    ],
)
def test_unsupported_nested_value_names_its_path(value: Any, path: str) -> None:
    with pytest.raises(TypeError) as info:
        default_codec.dumps(value, where="the input of job 'j'")
    message = str(info.value)
    assert message.startswith("cannot store the input of job 'j' as JSON: object of type 'Opaque'")
    assert path in message


@pytest.mark.parametrize("key", [1, 1.5, None, (1, 2), Color.RED])
def test_non_string_keys_are_an_error(codec: JsonCodec, key: Any) -> None:
    with pytest.raises(TypeError) as info:
        codec.dumps({"ok": {key: 1}}, where="the output of job 'j'")
    message = str(info.value)
    assert message.startswith("cannot store the output of job 'j' as JSON: dict key")
    assert repr(key) in message
    assert "is not a string" in message
    assert "(at ['ok'])" in message


def test_unserializable_model_field_names_where() -> None:
    class Holder(BaseModel):
        model_config = ConfigDict(arbitrary_types_allowed=True)
        thing: Opaque

    with pytest.raises(TypeError) as info:
        default_codec.dumps([Holder(thing=Opaque())], where="the result of step 's'")
    message = str(info.value)
    assert message.startswith(
        "cannot store the result of step 's' as JSON: pydantic model 'Holder'"
    )
    assert "(at [0])" in message


def test_circular_reference_is_a_type_error(codec: JsonCodec) -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(TypeError, match="circular reference"):
        codec.dumps(loop, where="x")


def test_classes_are_not_values() -> None:
    with pytest.raises(TypeError, match="object of type 'type'"):
        default_codec.dumps(Point)


def test_default_codec_uses_orjson() -> None:
    assert repr(JsonCodec()) == "JsonCodec(use_orjson=True)"
    assert repr(JsonCodec(use_orjson=False)) == "JsonCodec(use_orjson=False)"


# --------------------------------------------------------------------------- canonical


def test_canonical_sorts_keys() -> None:
    a = {"b": 1, "a": {"d": 2, "c": 3}}
    b = {"a": {"c": 3, "d": 2}, "b": 1}
    assert canonical(a) == canonical(b) == '{"a":{"c":3,"d":2},"b":1}'


def test_canonical_is_deterministic_for_sets_and_escapes() -> None:
    s1 = {"x": {3, 1, 2}, TAG: "v", "a": frozenset({"b", "a"})}
    s2 = {"a": frozenset({"a", "b"}), TAG: "v", "x": {2, 3, 1}}
    assert canonical(s1) == canonical(s2)
    assert '"v":[1,2,3]' in canonical(s1)
    assert default_codec.canonical(s1) == canonical(s1)
    assert JsonCodec(use_orjson=False).loads(canonical(s1)) == s1


def test_canonical_of_models_and_dataclasses() -> None:
    assert canonical(Upload(path="a", user_id=1)) == canonical(
        {"user_id": 1, "path": "a", "at": None, "tags": []}
    )
    assert canonical(Point(1, 2)) == '{"label":"","when":null,"x":1,"y":2}'


def test_canonical_error_names_where() -> None:
    with pytest.raises(TypeError, match=r"^cannot store the input of job 'j' as JSON"):
        canonical({"a": Opaque()}, where="the input of job 'j'")
