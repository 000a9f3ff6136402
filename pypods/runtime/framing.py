"""Cutting a byte stream into BSON frames, without doing any I/O (sans-IO).

A frame is exactly one BSON document: BSON's own little-endian int32 length prefix
(which counts itself) says where it ends, so no extra header is needed.

``FrameReader`` owns a buffer and tells its caller where to read next
(``writable()``), so the caller can use ``readv``/``readinto`` straight into it: small
frames land in one reusable buffer, and a frame larger than that buffer gets a buffer
of its own, of exactly its size, so even a huge frame is read with no copy or join.
"""

from __future__ import annotations

import struct

from .protocol import MAX_FRAME_SIZE, MIN_FRAME_SIZE

_LENGTH = struct.Struct("<i")

#: Size of the reusable read buffer: large enough that a typical reply arrives in one
#: read, small enough to keep per-pod memory trivial.
DEFAULT_BUFFER_SIZE = 64 * 1024


class FrameError(ValueError):
    """The byte stream is not a valid sequence of frames; it cannot be resynchronised."""


class FrameReader:
    """Collects bytes and hands out whole frames.

    Usage, with any file descriptor::

        n = os.readv(fd, [reader.writable()])
        if n == 0: ...  # EOF: ``reader.pending`` tells whether a frame was cut short
        reader.wrote(n)
        while (frame := reader.next_frame()) is not None:
            handle(frame)

    A frame returned by ``next_frame`` is a memoryview that stays valid only until the
    next call to ``writable``; decode it (or copy it) before reading more.
    """

    def __init__(
        self, *, max_frame_size: int = MAX_FRAME_SIZE, buffer_size: int = DEFAULT_BUFFER_SIZE
    ) -> None:
        if not MIN_FRAME_SIZE <= max_frame_size <= MAX_FRAME_SIZE:
            raise ValueError(
                f"max_frame_size must be between {MIN_FRAME_SIZE} and {MAX_FRAME_SIZE}"
            )
        self.max_frame_size = max_frame_size
        self._small = bytearray(max(buffer_size, 16))
        self._buf = self._small
        self._view = memoryview(self._buf)
        self._start = 0  # first byte not yet handed out
        self._end = 0  # one past the last byte received

    @property
    def pending(self) -> int:
        """Bytes received that are not yet part of a returned frame."""
        return self._end - self._start

    def writable(self) -> memoryview:
        """Return the buffer region the next read should fill.

        Raises:
            FrameError: the pending length prefix is invalid (see ``next_frame``).
            RuntimeError: a complete frame is waiting; take it with ``next_frame`` first.
        """
        if self._start == self._end:
            self._use(self._small, 0, 0)
        size = self._frame_size()
        if size is not None and size > len(self._small):
            if self._buf is self._small:
                big = bytearray(size)  # exactly one frame, read in place
                big[: self.pending] = self._view[self._start : self._end]
                self._use(big, 0, self.pending)
        elif self._end == len(self._buf) or (
            size is not None and self._start + size > len(self._buf)
        ):
            self._compact()
        if self._end == len(self._buf):
            raise RuntimeError("a complete frame is waiting: call next_frame() first")
        return self._view[self._end :]

    def wrote(self, count: int) -> None:
        """Record that ``count`` bytes were written at the start of ``writable()``."""
        if count < 0 or self._end + count > len(self._buf):
            raise ValueError("wrote() count is outside the writable region")
        self._end += count

    def next_frame(self) -> memoryview | None:
        """Return the next complete frame, or None until more bytes arrive.

        Raises:
            FrameError: the length prefix is below the BSON minimum or above
                ``max_frame_size``, or the frame does not end with BSON's NUL byte.
        """
        size = self._frame_size()
        if size is None or self.pending < size:
            return None
        start = self._start
        end = start + size
        if self._buf[end - 1] != 0:
            raise FrameError("frame does not end with a NUL byte: the stream is corrupt")
        self._start = end
        return self._view[start:end]

    def _frame_size(self) -> int | None:
        if self.pending < 4:
            return None
        (size,) = _LENGTH.unpack_from(self._buf, self._start)
        if size < MIN_FRAME_SIZE or size > self.max_frame_size:
            raise FrameError(
                f"frame length prefix {size} is outside the allowed range "
                f"{MIN_FRAME_SIZE}..{self.max_frame_size}: the stream is corrupt"
            )
        return size

    def _compact(self) -> None:
        pending = self.pending
        if self._start:
            # bytes() first: a bytearray slice assignment from a view of itself would
            # be an overlapping copy.
            self._small[:pending] = bytes(self._view[self._start : self._end])
        self._use(self._small, 0, pending)

    def _use(self, buf: bytearray, start: int, end: int) -> None:
        if buf is not self._buf:
            self._view.release()
            self._buf = buf
            self._view = memoryview(buf)
        self._start, self._end = start, end
