"""The receiving side never trusts the peer: fuzzed bytes and fuzzed documents raise
the protocol's own errors, never anything else, and never hang or allocate what was
not sent. Bounded budgets keep this in the ordinary suite."""

from __future__ import annotations

import bson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pypods.runtime import codec, framing, messages
from pypods.runtime.codec import TAG

from .test_codec import through_bson
from .values import values_with_arrays

#: What a receiver may raise for bad input: each is turned into a PodError or an
#: error reply by the client and the pod.
RECEIVER_ERRORS = (framing.FrameError, messages.ProtocolError, codec.DecodeError, EOFError)

LIMIT = 1 << 20  # the maximum message size these receivers are configured with


def receive(stream: bytes) -> list:
    """Everything a receiver does with a stream: frames, attachments, values."""
    reader = framing.FrameReader(max_frame_size=LIMIT)
    rest = memoryview(stream)
    received = []
    frame = reader.take(bytes(rest[: framing.READ_SIZE]))
    rest = rest[framing.READ_SIZE :]

    def read_into(view):
        nonlocal rest
        count = min(len(view), len(rest))
        view[:count] = rest[:count]
        rest = rest[count:]
        return count

    while True:
        while frame is None:
            if not rest and not reader.pending:
                return received
            if not rest:
                raise EOFError("stream ended inside a frame")
            frame = reader.take(bytes(rest[: framing.READ_SIZE]))
            rest = rest[framing.READ_SIZE :]
        doc = messages.unpack(frame)
        sizes, immutable = messages.attachment_sizes(doc, LIMIT)
        attachments = framing.read_attachments(reader, sizes, read_into, immutable)
        received.append(codec.decode(doc.get("value"), attachments=attachments))
        frame = reader.next_frame()


def stream_of(value) -> bytes:
    parts = messages.done_reply(7, value)
    return b"".join(bytes(memoryview(part).cast("B")) for part in parts)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_protocol_errors(data):
    try:
        receive(data)
    except RECEIVER_ERRORS:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values_with_arrays, st.data())
def test_corrupted_messages_raise_only_protocol_errors(value, data):
    stream = bytearray(stream_of(value))
    mutation = data.draw(st.sampled_from(["flip", "truncate", "length", "insert"]))
    position = data.draw(st.integers(0, max(0, len(stream) - 1)))
    if mutation == "flip":
        stream[position] ^= data.draw(st.integers(1, 255))
    elif mutation == "truncate":
        del stream[position:]
    elif mutation == "length":  # a lying length prefix, possibly huge
        stream[0:4] = data.draw(st.integers(-(2**31), 2**31 - 1)).to_bytes(4, "little", signed=True)
    else:
        stream[position:position] = data.draw(st.binary(min_size=1, max_size=8))
    try:
        receive(bytes(stream))
    except RECEIVER_ERRORS:
        pass


safe_text = st.text(
    alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]), max_size=10
)
json_like = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(),
        safe_text,
        st.binary(max_size=40),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(safe_text, children, max_size=4)
    ),
    max_leaves=12,
)
kinds = st.sampled_from([*sorted(codec._DECODERS), "nope"])
FIELDS = ["v", "x", "dtype", "shape", "order", "class", "fields", "tz", "of", "buffers", "safe"]
#: Payloads shaped like the real ones (short lists of numbers, a dtype-like string), so
#: that the decoders' checks of values, not only of types, are exercised.
near_valid = st.one_of(
    json_like,
    st.lists(st.integers(-(2**40), 2**62), max_size=9),
    st.lists(st.one_of(st.integers(-5, 70), st.none(), st.text(max_size=3)), max_size=9),
    st.sampled_from(["<f8", "|b1", "O", "V99999999", "<M8[ns]", "C", "F", "d", "q", "<"]),
)
tagged = st.builds(
    lambda kind, fields: {TAG: kind, **fields},
    kinds,
    st.dictionaries(st.sampled_from(FIELDS), near_valid, max_size=4),
)


@settings(max_examples=600, deadline=None)
@given(st.one_of(tagged, st.lists(tagged, max_size=3)), st.lists(st.integers(0, 64), max_size=3))
def test_forged_tagged_values_raise_only_decode_errors(value, sizes):
    """Every decoder, fed payloads the encoder never makes (and attachments that may
    or may not exist): a value or a DecodeError, nothing else."""
    doc = {"id": 1, "status": "done", "value": value}
    if sizes:
        doc["x"] = sizes
    stream = bson.encode(doc) + b"\x01" * sum(sizes)
    try:
        receive(stream)
    except RECEIVER_ERRORS:
        pass


def test_a_huge_announced_attachment_is_refused_before_allocating():
    doc = bson.encode({"id": 1, "status": "done", "value": None, "x": [LIMIT + 1]})
    with pytest.raises(messages.ProtocolError, match="maximum message size"):
        receive(doc)


def test_an_attachment_cut_short_is_an_error_not_a_hang():
    stream = stream_of(b"z" * 100_000)
    with pytest.raises(EOFError):
        receive(stream[:-10])


def test_the_fuzz_helpers_receive_valid_streams_whole():
    """The harness itself: a valid stream of two messages comes out as its values."""
    assert receive(stream_of([1, b"y" * 50_000]) + stream_of("two")) == [[1, b"y" * 50_000], "two"]
    assert through_bson((1, 2)) == (1, 2)


# -- reading past a message too deep to decode --------------------------------------------

HEADER_FIELDS = ("id", "x", "xb")


@settings(max_examples=200, deadline=None)
@given(values_with_arrays)
def test_the_header_of_any_message_matches_its_full_decoding(value):
    frame = messages.done_reply(7, value)[0]
    full = messages.unpack(frame)
    assert messages.unpack_header(frame) == {k: full[k] for k in HEADER_FIELDS if k in full}


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=5, max_size=200))
def test_the_header_of_random_bytes_is_a_protocol_error_or_a_document(data):
    frame = len(data).to_bytes(4, "little") + data[4:-1] + b"\x00"
    try:
        header = messages.unpack_header(frame)
    except messages.ProtocolError:
        return
    assert type(header["id"]) is int and set(header) <= set(HEADER_FIELDS)


@pytest.mark.parametrize("size", [-3, -100, 0, 2**31 - 1])
def test_a_header_walk_never_loops_on_a_lying_element_size(size):
    """A nested document's size that points backwards, nowhere, or past the end."""
    element = b"\x03doc\x00" + size.to_bytes(4, "little", signed=True) + b"\x00"
    body = b"\x10id\x00" + (1).to_bytes(4, "little") + element
    frame = (len(body) + 5).to_bytes(4, "little") + body + b"\x00"
    with pytest.raises(messages.ProtocolError):
        messages.unpack_header(frame)
