"""Python values <-> BSON-safe values, losslessly. Pure functions: no I/O, no state.

pymongo's ``bson`` carries some Python values exactly (None, bool, float, str, bytes,
lists, dicts with str keys, ints within int64) and mangles or refuses the rest: tuples
come back as lists, ints of 2**31 and more as ``bson.Int64``, datetimes lose their
microseconds, bigger ints raise. ``encode`` rewrites a value into one BSON carries
exactly, writing everything else as a *tagged* document ``{TAG: kind, "v": payload}``;
``decode`` turns that back into the original value, equal in value *and* type.

It is a bijection: a user's own dict that BSON cannot carry as a plain document
(non-str keys, a NUL in a key, the TAG key itself, or "$ref", which makes pymongo build
a ``DBRef``) is itself tagged, as kind "dict" with its items, so no user value is ever
mistaken for a tag.

New kinds are added by registering an encoder for a Python type in ``_ENCODERS`` and a
decoder for its kind in ``_DECODERS``; nothing else changes.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Callable, Mapping, Sequence

from bson.int64 import Int64

#: Key that marks a tagged document. Chosen to be unlikely in user data; when it does
#: occur, the dict holding it is escaped (tagged as "dict"), so collisions cost bytes,
#: never correctness.
TAG = "$pypods"

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1
_NONE_TYPE = type(None)
_PLAIN = frozenset({str, float, bool, bytes, _NONE_TYPE})

#: Types of decoded BSON values that stand for themselves: ``decode`` returns such a
#: value unchanged (callers may skip it). Not ``Int64``: that becomes ``int``.
DECODES_TO_ITSELF = frozenset({str, float, bool, bytes, int, _NONE_TYPE})


class UnsupportedTypeError(TypeError):
    """A value has a type that cannot cross the pod boundary.

    Attributes:
        type_name: qualified name of the offending type.
        path: where the value sits inside what was being sent, e.g. ``args[1]['cfg'][3]``.
    """

    def __init__(self, type_name: str, path: str) -> None:
        self.type_name = type_name
        self.path = path
        super().__init__(
            f"cannot send a value of type {type_name} (at {path}): values that cross a "
            f"pod boundary must be {SUPPORTED_TYPES}"
        )

    def __reduce__(self):  # keep pickling working despite the custom __init__
        return (type(self), (self.type_name, self.path))


class DecodeError(ValueError):
    """A received value is not something ``encode`` could have produced."""


class NestingError(DecodeError):
    """A received value is nested deeper than this interpreter can rebuild.

    Not a broken peer: the sending side may have a deeper stack to spare. The value
    is refused; the connection is fine.
    """


#: Human-readable list of what crosses, for error messages and docs.
SUPPORTED_TYPES = (
    "None, bool, int, float, str, bytes, list, tuple, dict or datetime.datetime "
    "(with no tzinfo or a datetime.timezone), nested in any way"
)


class _Unsupported(Exception):
    """Internal: raised deep in the encoder, turned into UnsupportedTypeError with a path."""


class _TooDeep(Exception):
    """Internal: the value nests deeper than MAX_DEPTH (or contains itself)."""


#: An element encoder: ``enc(value, depth)``.
Encoder = Callable[[Any, int], Any]

#: How deeply containers may nest in a value that crosses. A fixed limit, checked by
#: the sender, so that whatever is sent can always be rebuilt by the receiver (whose
#: decoders recurse), whichever Python it runs; a value that contains itself hits it
#: at once. MongoDB allows 100 levels of documents; PyPods writes some containers as
#: two or three levels of BSON, so 200 Python levels stay well inside what pymongo
#: decodes with Python's default recursion limit.
MAX_DEPTH = 200


def encode(value: Any, root: str = "value", careful: bool = False) -> Any:
    """Return a BSON-safe value that ``decode`` turns back into ``value``.

    Args:
        value: what to send.
        root: how the value is named in error messages (``args``, ``result``...).
        careful: also tag str values and keys that UTF-8 cannot encode (lone
            surrogates). Off by default because it costs a check per non-ASCII
            string; callers retry with it on when BSON refuses a string.

    Raises:
        UnsupportedTypeError: a value somewhere inside cannot cross; the message names
            its type and where it is.
        ValueError: the value contains itself (a reference cycle) or is nested too deeply.
    """
    enc = _encode_careful if careful else _encode
    try:
        return enc(value)
    except (_Unsupported, _TooDeep, RecursionError) as exc:
        raise _encoding_error(exc, value, root) from None


def encode_items(values: Sequence[Any], root: str = "args", careful: bool = False) -> list:
    """``encode`` for a sequence of values (positional arguments), as a BSON array.

    Same as ``encode(list(values))`` without the copy: this is on every call's path.
    """
    enc = _encode_careful if careful else _encode
    try:
        return [enc(x, 0) for x in values]  # the argument list itself is not a level
    except (_Unsupported, _TooDeep, RecursionError) as exc:
        raise _encoding_error(exc, values, root) from None


def is_plain_scalar(value: Any) -> bool:
    """True when ``value`` crosses BSON unchanged *and* comes back as itself.

    That is None, bool, float, str, bytes, and ints within int32 (pymongo turns
    larger ones into ``Int64``). Such values skip both the encoder and the decoder:
    the shortcut that keeps a tiny call cheap.
    """
    t = type(value)
    return t in _PLAIN or (t is int and _INT32_MIN <= value <= _INT32_MAX)


def all_plain_scalars(values: Sequence[Any]) -> bool:
    """True when every item of ``values`` is a plain scalar (see ``is_plain_scalar``)."""
    for value in values:
        t = type(value)
        if t not in _PLAIN and (t is not int or not _INT32_MIN <= value <= _INT32_MAX):
            return False
    return True


def decode(value: Any) -> Any:
    """Inverse of ``encode``.

    Raises:
        DecodeError: the value holds something ``encode`` never produces (an unknown
            tag, a malformed payload, a BSON type PyPods does not use).
    """
    try:
        return _decode(value)
    except DecodeError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, OverflowError) as exc:
        raise DecodeError(f"malformed value: {exc}") from None
    except RecursionError:
        raise NestingError("the value is nested too deeply to rebuild here") from None


# -- encoding ----------------------------------------------------------------------


def _encode(v: Any, depth: int = 0) -> Any:
    t = type(v)
    if t in _PLAIN:
        return v
    if t is int:
        return v if _INT64_MIN <= v <= _INT64_MAX else _encode_big_int(v)
    return _encode_container(v, t, _encode, depth)


def _encode_careful(v: Any, depth: int = 0) -> Any:
    """``_encode`` that also tags strings UTF-8 cannot encode (see ``encode``)."""
    t = type(v)
    if t is str:
        return v if _utf8_safe(v) else {TAG: "str", "v": v.encode("utf-8", "surrogatepass")}
    if t in _PLAIN or t is int:
        return _encode(v)
    return _encode_container(v, t, _encode_careful, depth)


def _encode_container(v: Any, t: type, enc: Encoder, depth: int) -> Any:
    """Encode a list, dict or extension type, nesting with ``enc``."""
    if depth >= MAX_DEPTH:
        raise _TooDeep
    depth += 1
    if t is list:
        return [enc(x, depth) for x in v]
    if t is dict:
        return _encode_dict(v, enc, depth)
    encoder = _ENCODERS.get(t)
    if encoder is None:
        raise _Unsupported
    return encoder(v, enc, depth)


def _utf8_safe(s: str) -> bool:
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _encode_dict(d: Mapping[Any, Any], enc: Encoder, depth: int) -> dict:
    if TAG in d or "$ref" in d:
        return _encode_dict_items(d, enc, depth)
    out = {}
    careful = enc is _encode_careful
    for k, v in d.items():
        if type(k) is not str or "\x00" in k or (careful and not _utf8_safe(k)):
            return _encode_dict_items(d, enc, depth)
        out[k] = enc(v, depth)
    return out


def _encode_dict_items(d: Mapping[Any, Any], enc: Encoder, depth: int) -> dict:
    return {TAG: "dict", "v": [[enc(k, depth), enc(v, depth)] for k, v in d.items()]}


def _encode_big_int(v: int) -> dict:
    # Bytes, not decimal text: linear time, and no int-to-str digit limit (Python 3.11+).
    length = (v.bit_length() + 8) // 8
    return {TAG: "int", "v": v.to_bytes(length, "little", signed=True)}


def _encode_tuple(v: tuple, enc: Encoder, depth: int) -> dict:
    return {TAG: "tuple", "v": [enc(x, depth) for x in v]}


def _encode_datetime(v: _dt.datetime, enc: Encoder, depth: int) -> dict:
    doc = {
        TAG: "datetime",
        "v": [v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, v.fold],
    }
    tz = v.tzinfo
    if tz is not None:
        if type(tz) is not _dt.timezone:
            raise _Unsupported
        offset = tz.utcoffset(None)
        name = tz.tzname(None)
        default_name = _dt.timezone(offset).tzname(None)
        doc["tz"] = [
            offset // _dt.timedelta(microseconds=1),
            None if name == default_name else name,
        ]
    return doc


#: Encoders for types that are written as tagged documents. Each takes the value, the
#: element encoder to use for anything nested inside it, and the depth to pass it.
_ENCODERS: dict[type, Callable[[Any, Encoder, int], Any]] = {
    tuple: _encode_tuple,
    _dt.datetime: _encode_datetime,
}


# -- decoding ----------------------------------------------------------------------


def _decode(v: Any) -> Any:
    t = type(v)
    if t is dict:
        if TAG in v:
            kind = v[TAG]
            decoder = _DECODERS.get(kind) if type(kind) is str else None
            if decoder is None:
                raise DecodeError(f"unknown tagged kind {kind!r}")
            return decoder(v)
        return {k: _decode(x) for k, x in v.items()}
    if t is list:
        return [_decode(x) for x in v]
    if t in DECODES_TO_ITSELF:
        return v
    if t is Int64:
        return int(v)
    raise DecodeError(f"unexpected BSON value of type {qualified_name(t)}")


def _payload(doc: dict, expected: type) -> Any:
    value = doc["v"]
    if type(value) is not expected:
        raise DecodeError(f"{doc[TAG]} payload must be {expected.__name__}")
    return value


def _decode_dict(doc: dict) -> dict:
    out = {}
    for item in _payload(doc, list):
        if type(item) is not list or len(item) != 2:
            raise DecodeError("dict items must be [key, value] pairs")
        out[_decode(item[0])] = _decode(item[1])
    return out


def _decode_datetime(doc: dict) -> _dt.datetime:
    parts = _payload(doc, list)
    if len(parts) != 8:
        raise DecodeError("datetime payload must have 8 fields")
    year, month, day, hour, minute, second, microsecond, fold = (int(p) for p in parts)
    tz = None
    if "tz" in doc:
        offset_us, name = doc["tz"]
        offset = _dt.timedelta(microseconds=int(offset_us))
        tz = _dt.timezone(offset) if name is None else _dt.timezone(offset, name)
    return _dt.datetime(year, month, day, hour, minute, second, microsecond, tzinfo=tz, fold=fold)


_DECODERS: dict[str, Callable[[dict], Any]] = {
    "tuple": lambda doc: tuple(_decode(x) for x in _payload(doc, list)),
    "dict": _decode_dict,
    "int": lambda doc: int.from_bytes(_payload(doc, bytes), "little", signed=True),
    "str": lambda doc: _payload(doc, bytes).decode("utf-8", "surrogatepass"),
    "datetime": _decode_datetime,
}


# -- error reporting (slow paths, run only after a failure) ---------------------------


def _find_unsupported(value: Any, path: str) -> tuple[str, Any]:
    """Return (path, value) of the first value inside ``value`` that cannot be encoded."""
    t = type(value)
    if t is list or t is tuple:
        for i, x in enumerate(value):
            found = _find_unsupported(x, f"{path}[{i}]")
            if found[1] is not _OK:
                return found
        return path, _OK
    if t is dict:
        for k, x in value.items():
            found = _find_unsupported(k, f"{path} (the key {k!r})")
            if found[1] is not _OK:
                return found
            found = _find_unsupported(x, f"{path}[{k!r}]")
            if found[1] is not _OK:
                return found
        return path, _OK
    try:
        _encode(value)
    except _Unsupported:
        if t is _dt.datetime:
            return f"{path}.tzinfo", value.tzinfo
        return path, value
    return path, _OK


_OK = object()


def _too_deep_message(value: Any, root: str) -> str:
    cycle = _find_cycle(value, root, set())
    if cycle:
        return (
            f"cannot send a value that contains itself (at {cycle}): reference cycles cannot cross"
        )
    return f"cannot send {root}: it is nested too deeply (containers may nest {MAX_DEPTH} levels)"


def _encoding_error(exc: BaseException, value: Any, root: str) -> Exception:
    """The public error for a failed encoding: what failed, and where in ``value``."""
    if isinstance(exc, _Unsupported):
        path, bad = _find_unsupported(value, root)
        return UnsupportedTypeError(qualified_name(type(bad)), path)
    if isinstance(exc, _TooDeep):
        return ValueError(_too_deep_message(value, root))
    return ValueError(_no_stack_message(root))


def _no_stack_message(root: str) -> str:
    return (
        f"cannot send {root}: this thread's stack ran out while encoding it (it is called "
        "from very deep recursion); call from shallower code"
    )


def encode_fields(fields: Mapping[str, Any], root: str = "kwargs", careful: bool = False) -> dict:
    """``encode`` for named values (keyword arguments).

    As with positional arguments, the container of the arguments does not count as a
    level of nesting: each value may nest as deeply as a result may.
    """
    enc = _encode_careful if careful else _encode
    try:
        return _encode_dict(fields, enc, 0)
    except (_Unsupported, _TooDeep, RecursionError) as exc:
        raise _encoding_error(exc, fields, root) from None


def _find_cycle(value: Any, path: str, active: set) -> str | None:
    t = type(value)
    if t not in (list, tuple, dict):
        return None
    if id(value) in active:
        return path
    active.add(id(value))
    try:
        items = value.items() if t is dict else enumerate(value)
        for k, x in items:
            found = _find_cycle(x, f"{path}[{k!r}]", active)
            if found:
                return found
    except RecursionError:
        return None
    finally:
        active.discard(id(value))
    return None


def qualified_name(t: type) -> str:
    module = getattr(t, "__module__", None)
    name = getattr(t, "__qualname__", t.__name__)
    return name if module in (None, "builtins") else f"{module}.{name}"
