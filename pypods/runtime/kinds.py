"""Standard-library types the codec carries: each with an encoder and a decoder.

Every kind is a tagged document ``{TAG: kind, "v": payload, ...}`` whose payload uses
only what BSON carries exactly, with nested values encoded by the engine (so they may
be of any supported type themselves). Decoders check what they read: a malformed
payload raises ``DecodeError`` rather than building a wrong value.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import fractions
import pathlib
import sys
import uuid
from array import array
from typing import Any, Iterable

from . import codec
from .codec import TAG, DecodeError, Decoding, Encoding, payload, register


def _decode_fields(doc: dict, count: int) -> list:
    fields = payload(doc, list)
    if len(fields) != count:
        raise DecodeError(f"{doc[TAG]} payload must have {count} fields")
    return fields


def _ints(values: list) -> list[int]:
    if not all(isinstance(v, int) and type(v) is not bool for v in values):
        raise DecodeError("expected integers")
    return [int(v) for v in values]


# -- containers -----------------------------------------------------------------------


def _decode_set(doc: dict, decoding: Decoding, cls: type) -> Any:
    items = decoding.items(doc)
    try:
        return cls(items)
    except TypeError:
        raise DecodeError(
            f"a {cls.__name__} element could not be rebuilt as a hashable value here "
            "(its class is missing on this side, so it came back as a dict)"
        ) from None


register(
    tuple,
    "tuple",
    lambda v, e, depth: {TAG: "tuple", "v": e.items(v, depth)},
    lambda doc, d: tuple(d.items(doc)),
)
register(
    set,
    "set",
    lambda v, e, depth: {TAG: "set", "v": e.items(v, depth)},
    lambda doc, d: _decode_set(doc, d, set),
)
register(
    frozenset,
    "frozenset",
    lambda v, e, depth: {TAG: "frozenset", "v": e.items(v, depth)},
    lambda doc, d: _decode_set(doc, d, frozenset),
)


def _set_children(value: Any) -> Iterable[tuple[str, Any]] | None:
    if type(value) in (set, frozenset):
        return ((f" (an element of the {type(value).__name__})", x) for x in value)
    return None


codec.register_children(_set_children)


# -- numbers ------------------------------------------------------------------------------


def _decode_complex(doc: dict, decoding: Decoding) -> complex:
    real, imag = _decode_fields(doc, 2)
    if type(real) is not float or type(imag) is not float:
        raise DecodeError("complex parts must be floats")
    return complex(real, imag)


def _decode_fraction(doc: dict, decoding: Decoding) -> fractions.Fraction:
    numerator, denominator = (decoding.value(x) for x in _decode_fields(doc, 2))
    numerator, denominator = _ints([numerator, denominator])
    if denominator <= 0:
        raise DecodeError("a fraction's denominator must be positive")
    return fractions.Fraction(numerator, denominator)


def _decode_decimal(doc: dict, decoding: Decoding) -> decimal.Decimal:
    text = payload(doc, str)
    if len(text) > 100_000:  # a decimal's digits are inline; refuse absurd ones
        raise DecodeError("decimal text is too long")
    try:
        return decimal.Decimal(text)
    except decimal.InvalidOperation:
        raise DecodeError(f"invalid decimal {text[:50]!r}") from None


register(
    complex,
    "complex",
    lambda v, e, depth: {TAG: "complex", "v": [v.real, v.imag]},
    _decode_complex,
)
register(
    decimal.Decimal,
    "decimal",
    lambda v, e, depth: {TAG: "decimal", "v": str(v)},
    _decode_decimal,
)
register(
    fractions.Fraction,
    "fraction",
    lambda v, e, depth: {
        TAG: "fraction",
        "v": [e.value(v.numerator, depth), e.value(v.denominator, depth)],
    },
    _decode_fraction,
)


def _decode_range(doc: dict, decoding: Decoding) -> range:
    start, stop, step = _ints([decoding.value(x) for x in _decode_fields(doc, 3)])
    return range(start, stop, step)


register(
    range,
    "range",
    lambda v, e, depth: {TAG: "range", "v": e.items((v.start, v.stop, v.step), depth)},
    _decode_range,
)


# -- long lists of numbers, packed ---------------------------------------------------------

_NATIVE_ORDER = "<" if sys.byteorder == "little" else ">"
_PACKED_TYPES = {float: "d", int: "q"}


def _pack_numbers(values: list, encoding: Encoding) -> Any:
    """A long list of only floats (or only int64 ints), as one attachment of 8-byte
    items: a C loop each way instead of a BSON element per item. None otherwise."""
    first = type(values[0])
    code = _PACKED_TYPES.get(first)
    if code is None or set(map(type, values)) != {first}:
        return None
    try:
        packed = array(code, values)  # type: ignore[call-arg]
    except OverflowError:  # an int beyond int64
        return None
    doc = {TAG: "numbers", "of": code, "order": _NATIVE_ORDER}
    return encoding.binary(doc, packed)


def _decode_numbers(doc: dict, decoding: Decoding) -> list:
    code = doc.get("of")
    if code not in ("d", "q") or doc.get("order") not in ("<", ">"):
        raise DecodeError("malformed packed list")
    data = decoding.binary(doc)
    if len(data) % 8:
        raise DecodeError("packed list length is not a multiple of 8")
    packed = array(code)  # type: ignore[call-arg]
    packed.frombytes(data)
    if doc["order"] != _NATIVE_ORDER:
        packed.byteswap()
    return packed.tolist()


codec._pack_numbers = _pack_numbers
register(None, "numbers", None, _decode_numbers)


# -- bytes-like ------------------------------------------------------------------------------


def _decode_bytearray(doc: dict, decoding: Decoding) -> bytearray:
    data = decoding.binary(doc)
    return data if type(data) is bytearray else bytearray(data)


register(
    bytearray,
    "bytearray",
    lambda v, e, depth: e.binary({TAG: "bytearray"}, v),
    _decode_bytearray,
)


def _decode_uuid(doc: dict, decoding: Decoding) -> uuid.UUID:
    data = payload(doc, bytes)
    if len(data) != 16:
        raise DecodeError("a UUID is 16 bytes")
    safe = doc.get("safe")
    return uuid.UUID(bytes=data, is_safe=uuid.SafeUUID(safe))


register(
    uuid.UUID,
    "uuid",
    lambda v, e, depth: {TAG: "uuid", "v": v.bytes, "safe": v.is_safe.value},
    _decode_uuid,
)


# -- paths ------------------------------------------------------------------------------------

_PATH_CLASSES = {
    cls.__name__: cls
    for cls in (
        pathlib.PurePath,
        pathlib.PurePosixPath,
        pathlib.PureWindowsPath,
        pathlib.Path,
        pathlib.PosixPath,
        pathlib.WindowsPath,
    )
}
_PURE_FLAVOUR = {"PosixPath": pathlib.PurePosixPath, "WindowsPath": pathlib.PureWindowsPath}


def _encode_path(v: pathlib.PurePath, encoding: Encoding, depth: int) -> dict:
    return {TAG: "path", "class": type(v).__name__, "v": encoding.value(str(v), depth)}


def _decode_path(doc: dict, decoding: Decoding) -> pathlib.PurePath:
    name = doc.get("class")
    cls = _PATH_CLASSES.get(name) if type(name) is str else None
    text = decoding.value(doc.get("v"))
    if cls is None or type(text) is not str:
        raise DecodeError(f"malformed path of class {name!r}")
    try:
        return cls(text)
    except (NotImplementedError, OSError, ValueError, TypeError):
        # A concrete path of the other operating system cannot exist here: its pure
        # flavour keeps the same parts and the same equality.
        return _PURE_FLAVOUR[str(name)](text)


for _cls in _PATH_CLASSES.values():
    register(_cls, None, _encode_path, None)
register(None, "path", None, _decode_path)


# -- dates and times --------------------------------------------------------------------------

_MICROSECOND = _dt.timedelta(microseconds=1)


def _encode_timezone(v: _dt.timezone, encoding: Encoding, depth: int) -> dict:
    offset = v.utcoffset(None)
    name = v.tzname(None)
    default_name = _dt.timezone(offset).tzname(None)
    return {TAG: "timezone", "v": [offset // _MICROSECOND, None if name == default_name else name]}


def _decode_timezone(doc: dict, decoding: Decoding) -> _dt.timezone:
    offset_us, name = _decode_fields(doc, 2)
    if not isinstance(offset_us, int) or (name is not None and type(name) is not str):
        raise DecodeError("malformed timezone")
    offset = _dt.timedelta(microseconds=int(offset_us))
    return _dt.timezone(offset) if name is None else _dt.timezone(offset, name)


register(_dt.timezone, "timezone", _encode_timezone, _decode_timezone)


def _zoneinfo_class() -> type | None:
    try:
        from zoneinfo import ZoneInfo  # Python 3.9+
    except ImportError:
        try:
            from backports.zoneinfo import ZoneInfo  # type: ignore[no-redef]
        except ImportError:
            return None
    return ZoneInfo


def _encode_zoneinfo(v: Any, encoding: Encoding, depth: int) -> dict:
    if v.key is None:  # built from a file: nothing names it on the other side
        raise codec.Unsupported("a ZoneInfo made from a file has no key to send")
    return {TAG: "zoneinfo", "v": v.key}


def _decode_zoneinfo(doc: dict, decoding: Decoding) -> Any:
    key = payload(doc, str)
    cls = _zoneinfo_class()
    if cls is None:
        raise DecodeError(
            f"time zone {key!r} cannot be rebuilt here: this Python has no zoneinfo "
            "(add backports.zoneinfo to the requirements)"
        )
    try:
        return cls(key)
    except Exception as exc:
        raise DecodeError(
            f"time zone {key!r} is not known here ({exc}); install the tzdata package"
        ) from None


_ZONEINFO = _zoneinfo_class()
if _ZONEINFO is not None:
    register(_ZONEINFO, None, _encode_zoneinfo, None)
register(None, "zoneinfo", None, _decode_zoneinfo)


def _tz_field(doc: dict, tz: Any, encoding: Encoding, depth: int) -> dict:
    if tz is not None:
        doc["tz"] = encoding.value(tz, depth)
    return doc


def _decode_tz(doc: dict, decoding: Decoding) -> Any:
    if "tz" not in doc:
        return None
    tz = decoding.value(doc["tz"])
    if not isinstance(tz, _dt.tzinfo):
        raise DecodeError("tz must be a time zone")
    return tz


def _encode_datetime(v: _dt.datetime, encoding: Encoding, depth: int) -> dict:
    fields = [v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, v.fold]
    return _tz_field({TAG: "datetime", "v": fields}, v.tzinfo, encoding, depth)


def _decode_datetime(doc: dict, decoding: Decoding) -> _dt.datetime:
    year, month, day, hour, minute, second, microsecond, fold = _ints(_decode_fields(doc, 8))
    tz = _decode_tz(doc, decoding)
    return _dt.datetime(year, month, day, hour, minute, second, microsecond, tz, fold=fold)


def _encode_time(v: _dt.time, encoding: Encoding, depth: int) -> dict:
    fields = [v.hour, v.minute, v.second, v.microsecond, v.fold]
    return _tz_field({TAG: "time", "v": fields}, v.tzinfo, encoding, depth)


def _decode_time(doc: dict, decoding: Decoding) -> _dt.time:
    hour, minute, second, microsecond, fold = _ints(_decode_fields(doc, 5))
    tz = _decode_tz(doc, decoding)
    return _dt.time(hour, minute, second, microsecond, tzinfo=tz, fold=fold)


register(_dt.datetime, "datetime", _encode_datetime, _decode_datetime)
register(_dt.time, "time", _encode_time, _decode_time)
register(
    _dt.date,
    "date",
    lambda v, e, depth: {TAG: "date", "v": [v.year, v.month, v.day]},
    lambda doc, d: _dt.date(*_ints(_decode_fields(doc, 3))),
)
register(
    _dt.timedelta,
    "timedelta",
    lambda v, e, depth: {TAG: "timedelta", "v": [v.days, v.seconds, v.microseconds]},
    lambda doc, d: _dt.timedelta(*_ints(_decode_fields(doc, 3))),
)


def _time_children(value: Any) -> Iterable[tuple[str, Any]] | None:
    if type(value) in (_dt.datetime, _dt.time) and value.tzinfo is not None:
        return ((".tzinfo", value.tzinfo),)
    return None


codec.register_children(_time_children)
