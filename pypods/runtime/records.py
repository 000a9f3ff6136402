"""Values of user-defined classes the codec understands: enum members, named tuples
and dataclasses.

Each is sent with the class's module and qualified name. The receiver rebuilds the
same class when it finds it, and otherwise falls back to the plain value (an enum
member's value, a named tuple's tuple, a dataclass's dict of fields): the data always
arrives, never an error.

The class is looked up among modules *already imported* on the receiving side; PyPods
never imports a module because a message names it, so receiving data can never run
code. (A class the receiver uses is imported there anyway: that is how it uses it.)
"""

from __future__ import annotations

import dataclasses
import enum
import sys
from typing import Any, Iterable

from . import codec
from .codec import TAG, DecodeError, Decoding, EncodeFn, Encoding, payload


def class_path(cls: type) -> str:
    """``module:qualname`` of a class, as sent on the wire."""
    return f"{cls.__module__}:{cls.__qualname__}"


def find_class(path: Any) -> type | None:
    """The class named by ``module:qualname`` if its module is imported here, else None."""
    if type(path) is not str or ":" not in path:
        return None
    module_name, _, qualname = path.partition(":")
    obj: Any = sys.modules.get(module_name)
    if obj is None:
        return None
    for part in qualname.split("."):
        if part.startswith("<"):  # a class defined inside a function
            return None
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if isinstance(obj, type) else None


# -- enum members ----------------------------------------------------------------------------


def _encode_enum(v: enum.Enum, encoding: Encoding, depth: int) -> dict:
    return {TAG: "enum", "class": class_path(type(v)), "v": encoding.value(v.value, depth)}


def _decode_enum(doc: dict, decoding: Decoding) -> Any:
    value = decoding.value(doc.get("v"))
    cls = find_class(doc.get("class"))
    if cls is not None and issubclass(cls, enum.Enum):
        try:
            return cls(value)
        except (ValueError, TypeError):
            pass  # the enum differs on this side: the value is what both agree on
    return value


# -- named tuples ----------------------------------------------------------------------------


def _is_named_tuple(t: type) -> bool:
    return issubclass(t, tuple) and isinstance(getattr(t, "_fields", None), tuple)


def _encode_named_tuple(v: tuple, encoding: Encoding, depth: int) -> dict:
    return {
        TAG: "namedtuple",
        "class": class_path(type(v)),
        "fields": list(type(v)._fields),  # type: ignore[attr-defined]
        "v": encoding.items(v, depth),
    }


def _decode_named_tuple(doc: dict, decoding: Decoding) -> tuple:
    values = decoding.items(doc)
    cls = find_class(doc.get("class"))
    if (
        cls is not None
        and _is_named_tuple(cls)
        and list(cls._fields) == doc.get("fields")  # type: ignore[attr-defined]
        and len(values) == len(cls._fields)  # type: ignore[attr-defined]
    ):
        return tuple.__new__(cls, values)
    return tuple(values)


# -- dataclasses ------------------------------------------------------------------------------


def _is_dataclass_type(t: type) -> bool:
    return dataclasses.is_dataclass(t)


def _encode_dataclass(v: Any, encoding: Encoding, depth: int) -> dict:
    fields = {f.name: getattr(v, f.name) for f in dataclasses.fields(v)}
    return {TAG: "dataclass", "class": class_path(type(v)), "v": encoding.mapping(fields, depth)}


def _decode_dataclass(doc: dict, decoding: Decoding) -> Any:
    fields = decoding.value(payload(doc, dict))
    if type(fields) is not dict:
        raise DecodeError("dataclass fields must be a dict")
    cls = find_class(doc.get("class"))
    if cls is None or not _is_dataclass_type(cls):
        return fields
    if [f.name for f in dataclasses.fields(cls)] != list(fields):
        return fields  # a different version of the class: the data, as a dict
    # As pickle does: the fields are set, __init__ and __post_init__ do not run again
    # (they ran where the value was made). Works for frozen and slotted classes too.
    obj: Any = cls.__new__(cls)  # type: ignore[call-overload]
    for name, value in fields.items():
        object.__setattr__(obj, name, value)
    return obj


# -- how each family is recognised ---------------------------------------------------------------


def _resolve(t: type) -> EncodeFn | None:
    if issubclass(t, enum.Enum):
        return _encode_enum
    if _is_named_tuple(t):
        return _encode_named_tuple
    if _is_dataclass_type(t):
        return _encode_dataclass
    return None


def _children(value: Any) -> Iterable[tuple[str, Any]] | None:
    t = type(value)
    if isinstance(value, enum.Enum):
        return ((".value", value.value),)
    if _is_named_tuple(t):
        return ((f".{name}", x) for name, x in zip(t._fields, value))  # type: ignore[attr-defined]
    if _is_dataclass_type(t):
        return ((f".{f.name}", getattr(value, f.name)) for f in dataclasses.fields(value))
    return None


codec.register_resolver(_resolve)
codec.register_children(_children)
codec.register(None, "enum", None, _decode_enum)
codec.register(None, "namedtuple", None, _decode_named_tuple)
codec.register(None, "dataclass", None, _decode_dataclass)
