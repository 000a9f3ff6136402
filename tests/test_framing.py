"""Cutting byte streams into frames, without processes."""

from __future__ import annotations

import os
import struct

import bson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pypods.runtime.framing import READ_SIZE, FrameError, FrameReader


def frames_of(*docs):
    return [bson.encode(d) for d in docs]


def read_all(reader: FrameReader, stream: bytes, chunk_sizes) -> list[bytes]:
    """Feed ``stream`` in chunks (using writable() when a big frame asks for it)."""
    out, pos = [], 0
    sizes = iter(chunk_sizes)
    while pos < len(stream):
        view = reader.writable()
        size = next(sizes, 7)
        if view is not None:
            n = min(len(view), size, len(stream) - pos)
            view[:n] = stream[pos : pos + n]
            reader.wrote(n)
            frame = reader.next_frame()
        else:
            n = min(size, len(stream) - pos)
            frame = reader.take(stream[pos : pos + n])
        pos += n
        while frame is not None:
            out.append(bytes(frame))
            frame = reader.next_frame()
    return out


def test_a_whole_frame_is_returned_without_copying():
    frame = bson.encode({"id": 1})
    assert FrameReader().take(frame) is frame


def test_several_frames_in_one_chunk():
    frames = frames_of({"a": 1}, {"b": "x" * 100}, {"c": []})
    assert read_all(FrameReader(), b"".join(frames), [10_000]) == frames


def test_every_split_point_of_two_frames():
    frames = frames_of({"a": 1, "s": "text"}, {"b": [1, 2, 3]})
    stream = b"".join(frames)
    for cut in range(1, len(stream)):
        assert read_all(FrameReader(), stream, [cut, len(stream)]) == frames


def test_a_large_frame_is_read_into_its_own_buffer():
    big = bson.encode({"blob": b"\x01" * (3 * READ_SIZE)})
    small = bson.encode({"after": True})
    reader = FrameReader()
    assert reader.take(big[:100]) is None
    view = reader.writable()
    assert view is not None and len(view) == len(big) - 100
    assert read_all(reader, big[100:] + small, [50_000]) == [big, small]


@pytest.mark.parametrize("prefix", [0, 4, -1, -(2**31)])
def test_length_prefix_below_the_minimum_is_an_error(prefix):
    with pytest.raises(FrameError, match="outside the allowed range"):
        FrameReader().take(prefix.to_bytes(4, "little", signed=True) + b"\0" * 8)


def test_length_prefix_above_the_maximum_is_refused_before_allocating():
    reader = FrameReader(max_frame_size=1024)
    with pytest.raises(FrameError, match="outside the allowed range"):
        reader.take((2**31 - 1).to_bytes(4, "little") + b"partial")


def test_frame_without_terminating_nul_is_an_error():
    frame = bytearray(bson.encode({"a": 1}))
    frame[-1] = 1
    with pytest.raises(FrameError, match="NUL"):
        FrameReader().take(bytes(frame))


def test_pending_counts_a_cut_off_frame():
    reader = FrameReader()
    frame = bson.encode({"a": "b" * 10})
    assert reader.take(frame[:-3]) is None
    assert reader.pending == len(frame) - 3


@settings(max_examples=200, deadline=None)
@given(
    docs=st.lists(
        st.dictionaries(
            st.text(max_size=5).filter(lambda k: "\0" not in k), st.binary(max_size=300)
        ),
        min_size=1,
        max_size=6,
    ),
    chunks=st.lists(st.integers(min_value=1, max_value=500), min_size=1, max_size=50),
)
def test_any_chunking_yields_the_same_frames(docs, chunks):
    frames = [bson.encode(d) for d in docs]
    assert read_all(FrameReader(), b"".join(frames), chunks) == frames


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_never_hangs_or_crashes_the_reader(garbage):
    reader = FrameReader(max_frame_size=1 << 16)
    try:
        frame = reader.take(garbage)
        while frame is not None:
            try:
                bson.decode(frame)
            except Exception:
                pass
            frame = reader.next_frame()
    except FrameError:
        pass
    assert reader.pending <= len(garbage)


def test_a_huge_announced_frame_costs_no_memory_until_its_bytes_arrive():
    """4 bytes announcing a 1 GiB frame must not make the reader touch 1 GiB."""

    def resident() -> int:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    reader = FrameReader(max_frame_size=(1 << 31) - 1)
    before = resident()
    assert reader.take(struct.pack("<i", 1 << 30) + b"\x00" * 16) is None
    assert len(reader.writable()) == (1 << 30) - 20
    assert resident() - before < 64 << 20
