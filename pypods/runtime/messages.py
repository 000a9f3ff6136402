"""Building and reading protocol messages as bytes (sans-IO).

Everything here is a pure function from Python values to frame bytes or back; the
client and the pod server own the file descriptors.
"""

from __future__ import annotations

import traceback
from typing import Any, Mapping, Sequence

import bson

from . import codec
from .framing import FrameError
from .protocol import (
    ERROR_KIND,
    ERROR_MESSAGE,
    ERROR_MRO,
    ERROR_TRACEBACK,
    ERROR_TYPE,
    FIELD_ARGS,
    FIELD_PLAIN_ARGS,
    KIND_RAISED,
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


def pack(doc: dict[str, Any]) -> bytes:
    """Encode a message document whose values are already BSON-safe."""
    return bson.encode(doc)


def unpack(frame: bytes | bytearray | memoryview) -> dict[str, Any]:
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


def invoke_request(
    request_id: int, function: str, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> bytes:
    """Build an ``invoke`` request.

    Raises:
        UnsupportedTypeError: an argument cannot cross (nothing was sent).
        ValueError: an argument contains itself or is nested too deeply.
    """
    doc: dict[str, Any] = {"op": OP_INVOKE, "id": request_id, "fn": function}
    if args:
        if codec.all_plain_scalars(args):
            doc[FIELD_PLAIN_ARGS] = args  # BSON writes a tuple as an array
        else:
            doc[FIELD_ARGS] = codec.encode_items(args)
    if kwargs:
        doc["kwargs"] = codec.encode_fields(kwargs)
    try:
        return bson.encode(doc)
    except UnicodeEncodeError:
        # A lone surrogate somewhere: UTF-8 cannot carry it, so redo the values with
        # the careful encoder, which tags such strings. Rare; costs nothing otherwise.
        if args:
            doc.pop(FIELD_PLAIN_ARGS, None)
            doc[FIELD_ARGS] = codec.encode_items(args, "args", True)
        if kwargs:
            doc["kwargs"] = codec.encode_fields(kwargs, "kwargs", True)
        return bson.encode(doc)


def request(op: str, request_id: int, **fields: Any) -> bytes:
    """Build a request whose fields are plain BSON values (describe, shutdown)."""
    return bson.encode({"op": op, "id": request_id, **fields})


def done_reply(request_id: int, value: Any, *, root: str = "result") -> bytes:
    """Build a successful reply carrying ``value``.

    Raises:
        UnsupportedTypeError: ``value`` cannot cross.
        ValueError: ``value`` contains itself or is nested too deeply.
    """
    encoded = value if codec.is_plain_scalar(value) else codec.encode(value, root)
    doc = {"id": request_id, "status": STATUS_DONE, "value": encoded}
    try:
        return bson.encode(doc)
    except UnicodeEncodeError:  # see invoke_request
        doc["value"] = codec.encode(value, root, True)
        return bson.encode(doc)


def error_reply(request_id: int, error: dict[str, Any]) -> bytes:
    """Build an error reply from an error document (see ``exception_error``)."""
    doc = {"id": request_id, "status": STATUS_ERROR, "error": error}
    try:
        return bson.encode(doc)
    except UnicodeEncodeError:  # a message or traceback with a lone surrogate
        safe = {k: _utf8(v) for k, v in error.items()}
        return bson.encode({**doc, "error": safe})


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
    "ProtocolError",
    "done_reply",
    "error_reply",
    "exception_error",
    "invoke_request",
    "pack",
    "plain_error",
    "request",
    "unpack",
]
