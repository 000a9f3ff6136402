"""Building and reading protocol messages as bytes (sans-IO).

Everything here is a pure function from Python values to frame bytes or back; the
client and the pod server own the file descriptors.
"""

from __future__ import annotations

import struct
import traceback
from typing import Any, List, Mapping, Sequence

import bson

from . import codec
from .framing import Buffer, FrameError
from .protocol import (
    ERROR_KIND,
    ERROR_MESSAGE,
    ERROR_MRO,
    ERROR_TRACEBACK,
    ERROR_TYPE,
    FIELD_ARGS,
    FIELD_ATTACHMENTS,
    FIELD_IMMUTABLE,
    FIELD_KWARGS,
    FIELD_PLAIN_ARGS,
    KIND_RAISED,
    MAX_ATTACHMENTS,
    OP_INVOKE,
    STATUS_DONE,
    STATUS_ERROR,
)

if not (callable(getattr(bson, "encode", None)) and callable(getattr(bson, "decode", None))):
    raise ImportError(
        f"the 'bson' module at {getattr(bson, '__file__', '?')} is not pymongo's: the "
        "standalone 'bson' package from PyPI (py-bson) installs a module of the same "
        "name over it. PyPods needs pymongo's bson: remove the requirement that pulls "
        "in 'bson', then reinstall pymongo."
    )


class ProtocolError(ValueError):
    """A frame holds something that is not a valid PyPods message."""


class MessageTooLarge(ValueError):
    """A message would exceed the receiver's maximum message size; it was not sent."""


def _within(parts: Parts, limit: int | None, what: str) -> Parts:
    if limit is not None:
        total = len(parts[0]) if len(parts) == 1 else size(parts)
        if total > limit:
            raise MessageTooLarge(
                f"{what} take {total} bytes, more than the maximum message size of {limit} "
                "bytes (PodLoader(max_message_size=...))"
            )
    return parts


def pack(doc: dict[str, Any]) -> bytes:
    """Encode a message document whose values are already BSON-safe."""
    return bson.encode(doc)


def unpack(frame: bytes | Buffer | memoryview) -> dict[str, Any]:
    """Decode one frame into a message document.

    Raises:
        ProtocolError: the frame is not valid BSON or has no int ``id``.
        NestingError: the frame is valid, but nests deeper than this interpreter can
            decode from where it is called (a deep stack); the stream is still sound.
    """
    try:
        doc = bson.decode(frame)
    except RecursionError:
        raise codec.NestingError("the message is nested too deeply to decode here") from None
    except Exception as exc:  # bson raises InvalidBSON and others for bad input
        if "recursion" in str(exc):  # pymongo's C decoder reports its depth limit so
            raise codec.NestingError(
                f"the message is nested too deeply to decode here: {exc}"
            ) from None
        raise ProtocolError(f"invalid BSON in frame: {exc}") from None
    if type(doc.get("id")) is not int:
        raise ProtocolError(f"message without an integer id: keys {sorted(doc)}")
    return doc


def unpack_header(frame: bytes | Buffer | memoryview) -> dict[str, Any]:
    """The message's ``id`` and attachment fields only, without decoding anything else.

    For a frame ``unpack`` could not decode (too deep for this stack, or interrupted):
    whether attachments follow, and how large, decides whether the stream can be
    kept in step. Top-level elements are walked by their sizes, so nothing nested is
    ever looked into.

    Raises:
        ProtocolError: the frame's elements do not add up, or it has no int ``id``.
    """
    data = bytes(frame)  # a copy, on this rare path only
    kept = []
    end = len(data) - 1
    position = 4
    try:
        while position < end:
            start = position
            name_end = data.index(b"\x00", position + 1, end)
            position = _element_end(data, data[position], name_end + 1)
            if not start < position <= end:
                raise ValueError(f"an element at byte {start} has a size out of bounds")
            if data[start + 1 : name_end] in _HEADER_FIELDS:
                kept.append(data[start:position])
        body = b"".join(kept)
        doc = bson.decode(_LENGTH_PREFIX.pack(len(body) + 5) + body + b"\x00")
    except Exception as exc:
        raise ProtocolError(f"invalid BSON in frame: {exc}") from None
    if type(doc.get("id")) is not int:
        raise ProtocolError(f"message without an integer id: keys {sorted(doc)}")
    return doc


_HEADER_FIELDS = frozenset({b"id", FIELD_ATTACHMENTS.encode(), FIELD_IMMUTABLE.encode()})
_LENGTH_PREFIX = struct.Struct("<i")
#: Sizes of BSON values that have a fixed size, by element type.
_FIXED_SIZES = {0x01: 8, 0x06: 0, 0x07: 12, 0x08: 1, 0x09: 8, 0x0A: 0, 0x10: 4, 0x11: 8,
                0x12: 8, 0x13: 16, 0x7F: 0, 0xFF: 0}  # fmt: skip


def _element_end(data: bytes, kind: int, position: int) -> int:
    """Where the value of type ``kind`` that starts at ``position`` ends."""
    if kind in _FIXED_SIZES:
        return position + _FIXED_SIZES[kind]
    if kind in _SIZED:
        before, after = _SIZED[kind]
        return position + before + _LENGTH_PREFIX.unpack_from(data, position)[0] + after
    if kind == 0x0B:  # regex: two C strings
        first = data.index(b"\x00", position) + 1
        return data.index(b"\x00", first) + 1
    raise ValueError(f"unknown element type {kind:#x}")


#: Values led by an int32 size, by element type: bytes to add before and after it
#: (string, code and symbol: the size excludes the prefix; document, array and code
#: with scope: it includes it; binary: a subtype byte follows; DBPointer: 12 bytes).
_SIZED = {0x02: (4, 0), 0x0D: (4, 0), 0x0E: (4, 0), 0x03: (0, 0), 0x04: (0, 0),
          0x0F: (0, 0), 0x05: (5, 0), 0x0C: (4, 12)}  # fmt: skip


#: A message ready to write: the BSON document, then its attachments, in order.
Parts = List[Any]


def _with_attachments(doc: dict[str, Any], attachments: list[Any]) -> Parts:
    if attachments:
        doc[FIELD_ATTACHMENTS] = [len(part) for part in attachments]
        immutable = [i for i, part in enumerate(attachments) if type(part) is bytes]
        if immutable:
            doc[FIELD_IMMUTABLE] = immutable
        return [bson.encode(doc), *attachments]
    return [bson.encode(doc)]


def invoke_request(
    request_id: int,
    function: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    options: codec.CodecOptions = codec.DEFAULT_OPTIONS,
    limit: int | None = None,
) -> Parts:
    """Build an ``invoke`` request of at most ``limit`` bytes.

    Raises:
        UnsupportedTypeError: an argument cannot cross (nothing was sent).
        MessageTooLarge: the request would be larger than ``limit``.
        ValueError: an argument contains itself or is nested too deeply.
    """
    doc: dict[str, Any] = {"op": OP_INVOKE, "id": request_id, "fn": function}
    if not kwargs and codec.all_plain_scalars(args):
        if args:
            doc[FIELD_PLAIN_ARGS] = args  # BSON writes a tuple as an array
        try:
            data = bson.encode(doc)
        except UnicodeEncodeError:
            pass  # a lone surrogate: the careful path below tags it
        else:
            if limit is None or len(data) <= limit:
                return [data]
            return _within([data], limit, f"the arguments of {function}()")
    for careful in (False, True):
        attachments: list[Any] = []
        encoded_args, encoded_kwargs = codec.encode_arguments(
            args, kwargs, options=options, attachments=attachments, careful=careful
        )
        doc.pop(FIELD_PLAIN_ARGS, None)
        if encoded_args:
            doc[FIELD_ARGS] = encoded_args
        if encoded_kwargs:
            doc[FIELD_KWARGS] = encoded_kwargs
        try:
            return _within(
                _with_attachments(doc, attachments), limit, f"the arguments of {function}()"
            )
        except UnicodeEncodeError:
            # A lone surrogate somewhere: UTF-8 cannot carry it, so redo the values with
            # the careful encoder, which tags such strings. Rare; costs nothing otherwise.
            if careful:
                raise
    raise AssertionError("unreachable")


def request(op: str, request_id: int, **fields: Any) -> Parts:
    """Build a request whose fields are plain BSON values (describe, shutdown)."""
    return [bson.encode({"op": op, "id": request_id, **fields})]


def done_reply(
    request_id: int,
    value: Any,
    *,
    root: str = "result",
    options: codec.CodecOptions = codec.DEFAULT_OPTIONS,
    limit: int | None = None,
) -> Parts:
    """Build a successful reply carrying ``value``, of at most ``limit`` bytes.

    Raises:
        UnsupportedTypeError: ``value`` cannot cross.
        MessageTooLarge: the reply would be larger than ``limit``.
        ValueError: ``value`` contains itself or is nested too deeply.
    """
    doc = {"id": request_id, "status": STATUS_DONE, "value": value}
    if codec.is_plain_scalar(value):  # small by definition: no size check needed
        try:
            return [bson.encode(doc)]
        except UnicodeEncodeError:
            pass
    for careful in (False, True):
        attachments: list[Any] = []
        doc["value"] = codec.encode(
            value, root, options=options, attachments=attachments, careful=careful
        )
        try:
            return _within(_with_attachments(doc, attachments), limit, "they")
        except UnicodeEncodeError:  # see invoke_request
            if careful:
                raise
    raise AssertionError("unreachable")


def size(parts: Parts) -> int:
    """The number of bytes a message takes on the wire."""
    return sum(memoryview(part).nbytes for part in parts)


def attachment_sizes(doc: dict[str, Any], limit: int) -> tuple[list[int], frozenset[int]]:
    """The sizes of the attachments that follow a message's document, checked, and
    the indexes of those to be read as ``bytes``.

    Raises:
        ProtocolError: the lists are malformed, or the attachments together exceed
            ``limit`` bytes (the receiver's maximum message size).
    """
    sizes = doc.get(FIELD_ATTACHMENTS)
    if sizes is None:
        return [], frozenset()
    if type(sizes) is not list or len(sizes) > MAX_ATTACHMENTS:
        raise ProtocolError("malformed attachment list")
    total = 0
    for item in sizes:
        if not isinstance(item, int) or type(item) is bool or item < 0:
            raise ProtocolError(f"malformed attachment size {item!r}")
        total += item
    if total > limit:
        raise ProtocolError(
            f"the message announces {total} bytes of attachments, more than the maximum "
            f"message size of {limit} bytes"
        )
    immutable = doc.get(FIELD_IMMUTABLE, [])
    if type(immutable) is not list or not all(
        type(i) is int and 0 <= i < len(sizes) for i in immutable
    ):
        raise ProtocolError("malformed list of bytes attachments")
    return [int(item) for item in sizes], frozenset(immutable)


def error_reply(request_id: int, error: dict[str, Any]) -> Parts:
    """Build an error reply from an error document (see ``exception_error``)."""
    doc = {"id": request_id, "status": STATUS_ERROR, "error": error}
    try:
        return [bson.encode(doc)]
    except UnicodeEncodeError:  # a message or traceback with a lone surrogate
        safe = {k: _utf8(v) for k, v in error.items()}
        return [bson.encode({**doc, "error": safe})]


def _utf8(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, list):
        return [_utf8(v) for v in value]
    return value


def plain_error(kind: str, type_name: str, message: str) -> dict[str, Any]:
    """An error document for a failure that is not an exception raised by pod code."""
    return {
        ERROR_KIND: kind,
        ERROR_TYPE: type_name,
        ERROR_MRO: [type_name],
        ERROR_MESSAGE: message,
        ERROR_TRACEBACK: "",
    }


def exception_error(exc: BaseException, *, kind: str = KIND_RAISED) -> dict[str, Any]:
    """Describe an exception raised in the pod, for an error reply."""
    cls = type(exc)
    return {
        ERROR_KIND: kind,
        ERROR_TYPE: codec.qualified_name(cls),
        ERROR_MRO: [codec.qualified_name(c) for c in cls.__mro__ if c is not object],
        ERROR_MESSAGE: _safe_str(exc),
        ERROR_TRACEBACK: "".join(traceback.format_exception(cls, exc, exc.__traceback__)),
    }


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<exception str() failed for {type(exc).__name__}>"


__all__ = [
    "FrameError",
    "MessageTooLarge",
    "Parts",
    "ProtocolError",
    "attachment_sizes",
    "done_reply",
    "error_reply",
    "exception_error",
    "invoke_request",
    "pack",
    "plain_error",
    "request",
    "size",
    "unpack",
]
