"""The codec, without processes: exact round trips, clear refusals, a strict decoder."""

from __future__ import annotations

import datetime as dt
import math
from collections import OrderedDict

import bson
import pytest
from hypothesis import given, settings

from pypods.runtime import codec, framing, messages
from pypods.runtime.codec import TAG, DecodeError, UnsupportedTypeError

from . import values
from .values import assert_same


def through_bson(value, options=codec.DEFAULT_OPTIONS):
    """Encode, pass through real bytes (document and attachments), decode: what
    crossing the pipe does."""
    parts = messages.done_reply(1, value, options=options)
    stream = b"".join(bytes(memoryview(part).cast("B")) for part in parts)
    reader = framing.FrameReader()
    doc = messages.unpack(reader.take(stream[: len(parts[0])]))
    rest = memoryview(stream)[len(parts[0]) :]

    def read_into(view):
        nonlocal rest
        count = min(len(view), len(rest))
        view[:count] = rest[:count]
        rest = rest[count:]
        return count

    sizes, immutable = messages.attachment_sizes(doc, 1 << 40)
    attachments = framing.read_attachments(reader, sizes, read_into, immutable)
    assert not rest, "every attachment byte is consumed"
    return codec.decode(doc["value"], options=options, attachments=attachments)


EXACT_VALUES = [
    None,
    True,
    False,
    0,
    -1,
    2**31 - 1,
    2**31,
    -(2**31) - 1,
    2**63 - 1,
    -(2**63),
    2**63,
    -(2**63) - 1,
    10**400,
    -(10**400),
    0.0,
    -0.0,
    1.5,
    math.inf,
    -math.inf,
    math.nan,
    "",
    "hello",
    "nul \x00 inside",
    "unicode: ünïcødé ✓ 🐍",
    "lone surrogate \udc80",
    b"",
    b"\x00\xff bytes",
    [],
    [1, [2, [3]]],
    (),
    (1,),
    (1, (2, (3,)), [4, (5,)]),
    {},
    {"a": 1, "b": [1, 2], "c": {"d": (1, 2)}},
    {TAG: "tuple", "v": [1, 2]},  # a user dict that looks like a tag
    {"$ref": "collection", "$id": 5},  # pymongo would build a DBRef from this
    {"key\x00with nul": 1},
    {"\udc80": "surrogate key"},
    dt.datetime(2024, 1, 2, 3, 4, 5, 678901),
    dt.datetime(1, 1, 1),
    dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
    dt.datetime(2021, 11, 7, 1, 30, fold=1),
    dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone.utc),
    dt.datetime(2024, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=-5, minutes=-30))),
    dt.datetime(2024, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=1), "CET")),
    dt.datetime(2024, 1, 2, tzinfo=dt.timezone(dt.timedelta(seconds=1, microseconds=7))),
    {1: "int key", (1, 2): "tuple key", None: "none key", 2.5: "float key"},
    [{"nested": ({"deep": [b"bytes", 10**30]},)}],
]


@pytest.mark.parametrize("value", EXACT_VALUES, ids=lambda v: repr(v)[:40])
def test_values_round_trip_exactly(value):
    assert_same(value, through_bson(value))


def test_big_ints_and_int64_come_back_as_plain_int():
    for value in (2**31, 2**40, -(2**40), 2**63 - 1):
        returned = through_bson(value)
        assert type(returned) is int and returned == value


def test_plain_arguments_skip_the_codec_yet_round_trip():
    args = (1, "two", 3.0, None, True, b"six", 2**31 - 1)
    assert codec.all_plain_scalars(args)
    doc = bson.decode(messages.invoke_request(1, "f", args, {})[0])
    assert "args" not in doc
    assert tuple(doc["a"]) == args
    assert all(type(a) is type(b) for a, b in zip(doc["a"], args))


def test_arguments_that_need_the_codec_are_encoded():
    args = (2**31, (1, 2))
    assert not codec.all_plain_scalars(args)
    doc = bson.decode(messages.invoke_request(1, "f", args, {})[0])
    assert codec.decode(doc["args"]) == [2**31, (1, 2)]


@pytest.mark.parametrize(
    ("value", "type_name", "path"),
    [
        ({1, object()}, "object", "value (an element of the set)"),
        ([1, 2, {"cfg": [0, 1, 2, Ellipsis]}], "ellipsis", "value[2]['cfg'][3]"),
        ({"x": object()}, "object", "value['x']"),
        ((1, 1j, iter([])), "list_iterator", "value[2]"),
        (OrderedDict(a=1), "collections.OrderedDict", "value"),
        ({NotImplemented: 1}, "NotImplementedType", "value (the key NotImplemented)"),
        (memoryview(b"x"), "memoryview", "value"),
    ],
)
def test_unsupported_values_name_type_and_path(value, type_name, path):
    with pytest.raises(UnsupportedTypeError) as info:
        codec.encode(value)
    error = info.value
    assert isinstance(error, TypeError)
    assert error.type_name == type_name
    assert error.path.startswith(path)
    assert type_name in str(error) and "at " + path in str(error)


def test_argument_paths_start_at_args():
    with pytest.raises(TypeError, match=r"at args\[1\]\['cfg'\]\[3\]"):
        messages.invoke_request(1, "f", (0, {"cfg": [0, 1, 2, {object()}]}), {})


def test_unsupported_tzinfo_is_refused():
    class Zone(dt.tzinfo):
        def utcoffset(self, when):
            return dt.timedelta(0)

    with pytest.raises(UnsupportedTypeError, match=r"at value\.tzinfo"):
        codec.encode(dt.datetime(2024, 1, 1, tzinfo=Zone()))


def test_reference_cycles_raise_a_clear_error():
    value: list = [1]
    value.append({"again": value})
    with pytest.raises(ValueError, match="contains itself"):
        codec.encode(value)


def test_nesting_up_to_the_limit_crosses_and_beyond_is_refused():
    value: list = []  # one level
    for _ in range(codec.MAX_DEPTH - 1):
        value = [value]  # MAX_DEPTH levels in all
    assert through_bson(value) == value
    inner = value[0][0]  # 198 levels, inside a tuple and a dict: 200 in all
    assert through_bson(({"k": inner},)) == ({"k": inner},)  # tagging adds no levels
    with pytest.raises(ValueError, match="nested too deeply"):
        codec.encode([value])


def test_very_deep_nesting_raises_instead_of_crashing():
    value: list = []
    for _ in range(100_000):
        value = [value]
    with pytest.raises(ValueError, match="nested too deeply"):
        codec.encode(value)


@pytest.mark.parametrize(
    "bad",
    [
        {TAG: "no-such-kind", "v": 1},
        {TAG: 5, "v": 1},
        {TAG: "tuple", "v": "not a list"},
        {TAG: "int", "v": 5},
        {TAG: "dict", "v": [[1]]},
        {TAG: "datetime", "v": [2024, 13, 1, 0, 0, 0, 0, 0]},
        {TAG: "datetime", "v": [1, 2]},
        {TAG: "tuple"},
        bson.ObjectId(),
        bson.Regex("x"),
        bson.Binary(b"x", 0x80),
        dt.datetime(2024, 1, 1),  # a BSON datetime: PyPods never sends one untagged
        # NumPy would widen a size-0 string dtype and allocate exabytes from no data
        {TAG: "ndarray", "dtype": "|S0", "shape": [2**62], "order": "C", "v": b""},
        {TAG: "ndarray", "dtype": "<U0", "shape": [2**30, 2**30], "order": "C", "v": b""},
    ],
    ids=repr,
)
def test_decoder_refuses_what_the_encoder_never_produces(bad):
    with pytest.raises(DecodeError):
        codec.decode(bad)


# -- property-based ----------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(values.values_with_arrays)
def test_any_supported_value_round_trips(value):
    assert_same(value, through_bson(value))


@settings(max_examples=50, deadline=None)
@given(values.values_with_arrays)
def test_any_supported_value_round_trips_with_pickle_enabled(value):
    """Enabling pickle changes nothing for types the codec carries itself."""
    options = codec.CodecOptions(pickle=True)
    assert_same(value, through_bson(value, options))


# -- attachments -------------------------------------------------------------------


BIG = codec.ATTACH_MIN


@pytest.mark.parametrize(
    "value",
    [
        [b"a" * BIG, b"b" * BIG, b"c" * (BIG + 1)],
        ["x" * BIG, "ÿ" * BIG, "\udc80" * BIG],
        {"one": b"1" * BIG, "two": "2" * BIG, "three": bytearray(b"3" * BIG)},
    ],
    ids=["bytes", "str", "mixed"],
)
def test_several_attachments_read_back_as_bytes_in_one_message(value):
    assert_same(value, through_bson(value))


def test_a_dict_re_encoded_for_a_non_string_key_attaches_each_value_once():
    value = {"blob": b"x" * BIG, 1: "int key", "text": "t" * BIG}
    parts = messages.done_reply(1, value)
    assert len(parts) == 3, "the document and one attachment per large value"
    assert_same(value, through_bson(value))
