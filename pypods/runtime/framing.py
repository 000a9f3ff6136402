"""Cutting a byte stream into BSON frames, without doing any I/O (sans-IO).

A frame is exactly one BSON document: BSON's own little-endian int32 length prefix
(which counts itself) says where it ends, so no extra header is needed.

The caller reads bytes however it likes and ``feed``s them in; ``next_frame`` hands
out whole frames. Two paths keep copying down:

- a chunk that holds exactly one whole frame (the usual small reply) is returned as
  is, with no copy;
- a frame larger than one read gets a buffer of exactly its size, and ``writable()``
  exposes the unfilled part, so the caller can ``readv``/``readinto`` the rest
  straight into its final place.
"""

from __future__ import annotations

import io
import mmap
import struct
from typing import Any, Callable, Union

from .protocol import MAX_FRAME_SIZE, MIN_FRAME_SIZE

_LENGTH = struct.Struct("<i")

#: How much a caller should ask for per read when no large frame is in progress.
READ_SIZE = 64 * 1024


class FrameError(ValueError):
    """The byte stream is not a valid sequence of frames; it cannot be resynchronised."""


class FrameReader:
    """Collects bytes and hands out whole frames.

    Usage::

        frame = reader.next_frame()
        while frame is None:
            view = reader.writable()
            if view is not None:              # a large frame: read into place
                reader.wrote(os.readv(fd, [view]))
                frame = reader.next_frame()
            else:
                frame = reader.take(os.read(fd, READ_SIZE))

    (A read of 0 bytes is EOF; ``pending`` then says whether a frame was cut short.)
    """

    def __init__(self, *, max_frame_size: int = MAX_FRAME_SIZE) -> None:
        if not MIN_FRAME_SIZE <= max_frame_size <= MAX_FRAME_SIZE:
            raise ValueError(
                f"max_frame_size must be between {MIN_FRAME_SIZE} and {MAX_FRAME_SIZE}"
            )
        self.max_frame_size = max_frame_size
        self._whole: bytes | None = None  # a chunk not yet looked at (zero-copy path)
        self._buf = bytearray()  # pending bytes of small frames
        self._big: Buffer | None = None  # the one large frame being filled
        self._big_view: memoryview | None = None
        self._big_filled = 0

    @property
    def pending(self) -> int:
        """Bytes received that are not yet part of a returned frame."""
        whole = len(self._whole) if self._whole is not None else 0
        return whole + len(self._buf) + self._big_filled

    def take(self, data: bytes) -> bytes | Buffer | None:
        """``feed(data)``, then ``next_frame()``: the common case in one call.

        When nothing is pending and ``data`` is exactly one frame (a typical small
        message), it is returned as is, with no copy and no buffering.
        """
        if self._whole is None and self._big is None and not self._buf and len(data) >= 4:
            size = _LENGTH.unpack_from(data)[0]
            if size == len(data) and size >= MIN_FRAME_SIZE and size <= self.max_frame_size:
                return self._check_end(data)
        self.feed(data)
        return self.next_frame()

    def feed(self, data: bytes) -> None:
        """Add bytes read from the stream."""
        big_view = self._big_view
        if big_view is not None:
            room = len(big_view) - self._big_filled
            taken = min(room, len(data))
            big_view[self._big_filled : self._big_filled + taken] = data[:taken]
            self._big_filled += taken
            if len(data) > room:
                self._buf += data[room:]
        elif self._whole is None and not self._buf:
            self._whole = data
        else:
            self._absorb_whole()
            self._buf += data

    def take_into(self, view: memoryview) -> int:
        """Move bytes already received (and not part of a frame) into ``view``.

        For raw attachments that follow a frame: the caller reads the rest of each
        one straight into its buffer. Returns how many bytes were moved.
        """
        if self._big is not None:
            raise ValueError("take_into() while a frame is incomplete")
        self._absorb_whole()
        buf = self._buf
        count = min(len(view), len(buf))
        if count:
            view[:count] = buf[:count]
            del buf[:count]
        return count

    def writable(self) -> memoryview | None:
        """The unfilled part of a large frame's buffer, or None when none is in progress."""
        big_view = self._big_view
        return None if big_view is None else big_view[self._big_filled :]

    def wrote(self, count: int) -> None:
        """Record that ``count`` bytes were read into ``writable()``."""
        if self._big is None or count < 0 or self._big_filled + count > len(self._big):
            raise ValueError("wrote() count is outside the writable region")
        self._big_filled += count

    def next_frame(self) -> bytes | Buffer | None:
        """Return the next complete frame, or None until more bytes arrive.

        Raises:
            FrameError: the length prefix is below the BSON minimum or above
                ``max_frame_size``, or the frame does not end with BSON's NUL byte.
        """
        whole = self._whole
        if whole is not None:
            if len(whole) >= 4:
                size = self._check_size(_LENGTH.unpack_from(whole)[0])
                if size == len(whole):
                    self._whole = None
                    return self._check_end(whole)
            self._absorb_whole()
        if self._big is not None:
            if self._big_filled < len(self._big):
                return None
            frame = self._big
            self._big = self._big_view = None
            self._big_filled = 0
            return self._check_end(frame)
        buf = self._buf
        if len(buf) < 4:
            return None
        size = self._check_size(_LENGTH.unpack_from(buf)[0])
        if len(buf) >= size:
            complete = bytes(buf[:size])
            del buf[:size]
            return self._check_end(complete)
        if size > READ_SIZE:
            # Pages of a mapped buffer are touched only as data arrives: a peer that
            # announces a huge frame and sends nothing costs no memory.
            self._big = allocate(size)
            self._big_view = memoryview(self._big)
            self._big_view[: len(buf)] = buf
            self._big_filled = len(buf)
            buf.clear()
        return None

    def _absorb_whole(self) -> None:
        if self._whole is not None:
            self._buf += self._whole
            self._whole = None

    def _check_size(self, size: int) -> int:
        if size < MIN_FRAME_SIZE or size > self.max_frame_size:
            raise FrameError(
                f"frame length prefix {size} is outside the allowed range "
                f"{MIN_FRAME_SIZE}..{self.max_frame_size}: the stream is corrupt"
            )
        return size

    @staticmethod
    def _check_end(frame: bytes | Buffer) -> bytes | Buffer:
        if frame[-1] != 0:
            raise FrameError("frame does not end with a NUL byte: the stream is corrupt")
        return frame


#: A buffer an attachment is read into: it becomes the memory of the decoded value.
Buffer = Union[bytearray, mmap.mmap]

#: Attachments at least this large are read into anonymous memory maps rather than
#: bytearrays: no zero-filling pass before the data arrives, and pages that a lying
#: size announced but no data filled are never touched.
MAP_MIN = 1 << 20


def allocate(size: int) -> Buffer:
    """A writable buffer of ``size`` bytes for an incoming attachment (private
    anonymous memory for large ones: its pages are only touched as data arrives)."""
    if size < MAP_MIN:
        return bytearray(size)
    flags = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", 0)
    return mmap.mmap(-1, size, flags=flags) if flags else mmap.mmap(-1, size)


def read_attachments(
    reader: FrameReader,
    sizes: list[int],
    read_into: Callable[[memoryview], int],
    immutable: frozenset[int] = frozenset(),
) -> list[Buffer | bytes]:
    """Read the raw attachments that follow a frame, each into a buffer of its own.

    ``read_into(view)`` reads at most ``len(view)`` bytes from the stream into
    ``view`` and returns the count (0 at end-of-file). Bytes the reader already holds
    are used first. Attachments listed in ``immutable`` come back as ``bytes``, read
    straight into the bytes object; the others as writable buffers.

    Raises:
        EOFError: the stream ended inside an attachment.
    """
    source = _Source(reader, read_into)
    buffers: list[Buffer | bytes] = []
    for index, size in enumerate(sizes):
        if index in immutable:
            # BufferedReader.read(n) allocates the bytes object and has the raw
            # stream read into it directly; a 1-byte buffer means it never reads
            # past the attachment's end.
            buffered = io.BufferedReader(source, buffer_size=1)
            try:
                data = buffered.read(size)
            finally:
                buffered.detach()  # else collecting it would close the shared source
            if len(data) < size:
                raise EOFError(f"the stream ended inside an attachment of {size} bytes")
            buffers.append(data)
            continue
        buffer = allocate(size)
        view = memoryview(buffer)
        filled = 0
        while filled < size:
            count = source.readinto(view[filled:])
            if not count:
                raise EOFError(f"the stream ended inside an attachment of {size} bytes")
            filled += count
        view.release()
        buffers.append(buffer)
    return buffers


class _Source(io.RawIOBase):
    """The stream as a raw file: first what the reader holds, then ``read_into``."""

    def __init__(self, reader: FrameReader, read_into: Callable[[memoryview], int]) -> None:
        super().__init__()
        self._reader = reader
        self._read_into = read_into

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = buffer if isinstance(buffer, memoryview) else memoryview(buffer)
        return self._reader.take_into(view) or self._read_into(view)


def write_all(write: Callable[[list], int], parts: list) -> None:
    """Write every byte of ``parts`` with a vectored ``write`` (``os.writev``-like).

    Large attachments are written from their own memory; partial writes resume where
    they stopped.
    """
    views = [memoryview(part).cast("B") if not isinstance(part, bytes) else part for part in parts]
    while views:
        batch = views[:_IOV_MAX]
        written = write(batch)
        while written:
            first = views[0]
            if written >= len(first):
                written -= len(first)
                del views[0]
            else:
                views[0] = memoryview(first)[written:]
                written = 0
        while views and not len(views[0]):
            del views[0]


#: How many buffers one writev call may take (POSIX guarantees at least 16; Linux
#: and macOS allow 1024).
_IOV_MAX = 512
