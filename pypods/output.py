"""Forwarding what a pod prints to the client's ``sys.stdout`` and ``sys.stderr``.

The pod's stdout and stderr are pipes read here, by one thread per pod, and written to
whatever ``sys.stdout``/``sys.stderr`` are at that moment: pytest's capture and
Jupyter's streams see pod output, not just the terminal. Because the pipes are read in
the client, output the pod wrote just before dying (a segfault message, a traceback)
is still read and kept for the crash report.

Ordering: the pod flushes its output before it writes a reply, so when a reply
arrives, everything the call printed is already in these pipes. ``drain()`` copies it
out before the call returns. The lock makes that hold even while the thread is
half-way through forwarding a chunk.
"""

from __future__ import annotations

import codecs
import collections
import os
import re
import select
import sys
import threading
from typing import Deque

#: How many lines of the pod's stderr are kept for crash reports.
STDERR_TAIL_LINES = 20

#: How much of one stderr line is kept for crash reports.
MAX_LINE = 4096

_LINE_BREAK = re.compile("\r\n|\r|\n")

_READ_SIZE = 64 * 1024
_MAX_ROUNDS = 64  # x _READ_SIZE: more than a full pipe (1 MiB at most by default)
# getattr: importable where select.poll does not exist (Windows), though unusable there
_EVENTS = (
    getattr(select, "POLLIN", 1) | getattr(select, "POLLHUP", 16) | getattr(select, "POLLERR", 8)
)


class OutputPump:
    """Copies a pod's stdout/stderr pipes into ``sys.stdout``/``sys.stderr``.

    Owns the two read descriptors and its wake-up pipe; its thread closes them all
    when it ends (at EOF, or when ``finish`` asks it to stop).
    """

    def __init__(self, stdout_fd: int, stderr_fd: int, *, name: str) -> None:
        self._streams = {stdout_fd: "stdout", stderr_fd: "stderr"}
        self._decoders = {
            fd: codecs.getincrementaldecoder("utf-8")(errors="replace") for fd in self._streams
        }
        self._stderr_fd = stderr_fd
        self._tail: Deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._partial_line = ""
        self._lock = threading.Lock()
        self._readable = set(self._streams)  # not yet at EOF
        self._at_eof: set[int] = set()  # at EOF, still to be closed by the thread
        # A poll object cannot be used by two threads at once. The thread blocks on
        # ``_waiter``; reads happen under the lock, through ``_reader``.
        self._reader = select.poll()
        self._waiter = select.poll()
        # For has_output(), whose callers serialise themselves; never changed, so a
        # pipe closed at EOF just reads as "maybe output", which is harmless.
        self._checker = select.poll()
        for fd in self._streams:
            self._reader.register(fd, _EVENTS)
            self._waiter.register(fd, _EVENTS)
            self._checker.register(fd, _EVENTS)
        self._wake_r, self._wake_w = os.pipe()
        self._waiter.register(self._wake_r, _EVENTS)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"pypods-output-{name}", daemon=True)
        self._thread.start()

    def has_output(self) -> bool:
        """True when there may be pod output not yet forwarded; False means none.

        One system call and no lock, so it can run after every call; it must not run
        in two threads at once (the pod's call lock sees to that). The pipes are
        checked first, then the lock: the thread only reads while holding the lock
        and forwards what it read before releasing it, so if the pipes are empty and
        the lock is free, everything written so far has been forwarded.
        """
        return bool(self._checker.poll(0)) or self._lock.locked()

    def drain(self) -> None:
        """Forward everything the pod has written so far, without waiting for more."""
        with self._lock:
            self._forward_ready()

    def stderr_tail(self) -> list[str]:
        """The last lines the pod wrote to stderr (for crash reports)."""
        with self._lock:
            lines = list(self._tail)
            if self._partial_line:
                lines.append(self._partial_line)
        return lines[-STDERR_TAIL_LINES:]

    def finish(self, timeout: float) -> None:
        """Forward what is left, waiting up to ``timeout`` s for EOF, then stop for good.

        Call once the pod process has exited. Output from the pod's own children that
        still hold the pipes after ``timeout`` is dropped.
        """
        if threading.current_thread() is self._thread:
            return
        self._thread.join(timeout)
        with self._lock:
            self._stopping = True
            if self._wake_w >= 0:
                os.write(self._wake_w, b"x")
        self._thread.join()

    def abandon(self) -> None:
        """In a forked child, where the thread does not exist: just close the pipes."""
        for fd in (*self._readable, *self._at_eof, self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._readable.clear()
        self._at_eof.clear()
        self._wake_r = self._wake_w = -1
        self._lock = threading.Lock()

    def _run(self) -> None:
        try:
            while True:
                self._waiter.poll()
                with self._lock:
                    self._forward_ready()
                    for fd in self._at_eof:
                        self._waiter.unregister(fd)
                        os.close(fd)
                    self._at_eof.clear()
                    if self._stopping or not self._readable:
                        return
        finally:
            # The thread owns every descriptor of the pump, and closes them all when it
            # ends, whether finish() asked it to or the pod's pipes reached EOF.
            with self._lock:
                for fd in (*self._readable, *self._at_eof, self._wake_r, self._wake_w):
                    os.close(fd)
                self._readable.clear()
                self._at_eof.clear()
                self._wake_r = self._wake_w = -1

    def _forward_ready(self) -> None:
        """Read and forward from every pipe that has data now. Caller holds the lock.

        Bounded, so a pod that never stops printing cannot hold a caller here forever.
        """
        for _ in range(_MAX_ROUNDS):
            if not self._readable:
                return
            ready = [fd for fd, _ in self._reader.poll(0) if fd in self._readable]
            if not ready:
                return
            for fd in ready:
                data = os.read(fd, _READ_SIZE)
                if data:
                    self._forward(fd, self._decoders[fd].decode(data))
                else:
                    self._forward(fd, self._decoders[fd].decode(b"", final=True))
                    self._reader.unregister(fd)
                    self._readable.discard(fd)
                    self._at_eof.add(fd)

    def _forward(self, fd: int, text: str) -> None:
        if not text:
            return
        if fd == self._stderr_fd:
            self._remember(text)
        stream = getattr(sys, self._streams[fd], None)
        if stream is None:  # pythonw, or a program that closed its streams
            return
        try:
            stream.write(text)
            stream.flush()
        except Exception:  # a closed or broken stream must not stop forwarding
            pass

    def _remember(self, text: str) -> None:
        # "\r" ends a line too (progress bars redraw with it), and an unfinished line
        # is kept bounded, so neither memory nor time grows with the output.
        lines = _LINE_BREAK.split(self._partial_line + text)
        self._partial_line = lines.pop()[-MAX_LINE:]
        self._tail.extend(line[-MAX_LINE:] for line in lines if line)
