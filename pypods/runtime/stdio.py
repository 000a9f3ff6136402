"""Moving the protocol off descriptors 0-2, so pod code cannot touch it.

The client starts the pod with the protocol on its stdin/stdout. Pod code, and the C
libraries it loads, believe those descriptors are theirs: ``print()``, ``os.write(1,
...)``, a C ``printf`` or ``input()`` would corrupt or consume protocol bytes. So before
anything else runs, the protocol moves to private (non-inheritable) descriptors, fd 0
becomes /dev/null and fd 1 becomes the output pipe the client passed for the pod's
stdout. fd 2 stays the stderr pipe the client reads.

Stdlib only: this runs before ``bson`` is imported, so a broken ``bson`` can still be
reported on stderr.
"""

from __future__ import annotations

import os
import sys
from typing import Callable


def take_over_stdio(output_fd: int) -> tuple[int, int]:
    """Move the protocol to private descriptors; return ``(read_fd, write_fd)``."""
    protocol_in = os.dup(0)  # os.dup makes non-inheritable descriptors
    protocol_out = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(output_fd, 1)
    os.close(output_fd)
    for stream in (sys.stdout, sys.stderr):
        # Line buffering shows progress lines as they are printed; UTF-8 is what the
        # client decodes, whatever the pod's locale.
        if stream is not None and hasattr(stream, "reconfigure"):
            stream.reconfigure(encoding="utf-8", errors="backslashreplace", line_buffering=True)
    return protocol_in, protocol_out


def output_flusher() -> Callable[[], None]:
    """Return a function that pushes all buffered pod output into the pipes.

    Called before every reply, so that what a call printed reaches the client before
    the reply does. Python's streams are flushed there; C stdio (``printf`` from an
    extension), which would be fully buffered on a pipe, is made unbuffered once
    here, or, where that is not possible, flushed on every call too.
    """
    c_fflush = None if _unbuffer_c_stdout() else _c_fflush()

    def flush() -> None:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:  # pod code may have replaced or closed a stream
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
        if c_fflush is not None:
            c_fflush(None)

    return flush


def _libc():
    if os.name != "posix":
        return None
    try:
        import ctypes

        return ctypes.CDLL(None)
    except Exception:  # no ctypes, or no C library symbols in this process
        return None


def _unbuffer_c_stdout() -> bool:
    libc = _libc()
    if libc is None:
        return False
    import ctypes

    for symbol in ("stdout", "__stdoutp"):  # glibc and musl; macOS
        try:
            stream = ctypes.c_void_p.in_dll(libc, symbol)
        except ValueError:
            continue
        libc.setvbuf.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_size_t]
        return libc.setvbuf(stream, None, _IONBF, 0) == 0
    return False


_IONBF = 2  # <stdio.h>: the same value on glibc, musl and macOS


def _c_fflush() -> Callable[[None], int] | None:
    libc = _libc()
    return libc.fflush if libc is not None else None
