"""Python values <-> BSON-safe values plus raw attachments, losslessly. No I/O.

pymongo's ``bson`` carries some Python values exactly (None, bool, float, str, bytes,
lists, dicts with str keys, ints within int64) and mangles or refuses the rest: tuples
come back as lists, ints of 2**31 and more as ``bson.Int64``, datetimes lose their
microseconds, bigger ints raise. ``Encoding.value`` rewrites a value into one BSON
carries exactly, writing everything else as a *tagged* document ``{TAG: kind, ...}``;
``Decoding.value`` turns that back into the original value, equal in value *and* type.

Large binary payloads (bytes, long strings, NumPy array data, packed lists of numbers,
pickle buffers) do not go inside the document: BSON encoding slows down badly with
size and a document cannot exceed 2 GiB. They become *attachments*, raw buffers sent
after the document, which a tagged document refers to by index (``"x": i``). The
sender hands the buffers to the pipe without copying them; the receiver reads each
straight into the memory the decoded value then uses (see ``framing.read_attachments``
and docs/protocol.md).

It is a bijection: a user's own dict that BSON cannot carry as a plain document
(non-str keys, a NUL in a key, the TAG key itself, or "$ref", which makes pymongo build
a ``DBRef``) is itself tagged, as kind "dict" with its items, so no user value is ever
mistaken for a tag.

The kinds live in small modules (``kinds``, ``records``, ``arrays``, ``pickling``); each
registers its encoders by Python type and its decoders by kind name. This module is
the engine: dispatch, depth limit, attachments, error paths.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from bson.int64 import Int64

#: Key that marks a tagged document. Chosen to be unlikely in user data; when it does
#: occur, the dict holding it is escaped (tagged as "dict"), so collisions cost bytes,
#: never correctness.
TAG = "$pypods"

#: Binary payloads (and strings, in UTF-8) of at least this many bytes travel as
#: attachments rather than inside the BSON document.
ATTACH_MIN = 32 * 1024

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1
_NONE_TYPE = type(None)
_SCALARS = frozenset({float, bool, _NONE_TYPE})
_SIZED = frozenset({str, bytes})

#: Types of decoded BSON values that stand for themselves: decoding returns such a
#: value unchanged (callers may skip it). Not ``Int64``: that becomes ``int``.
DECODES_TO_ITSELF = frozenset({str, float, bool, bytes, int, _NONE_TYPE})


class CodecOptions:
    """What one side of a connection agreed to send and accept.

    Attributes:
        pickle: values of other types are pickled, and pickles are accepted. Off
            unless the loader opted in: unpickling runs code chosen by the sender.
        cloudpickle: pickle with cloudpickle (both sides have it), so functions and
            classes defined in ``__main__`` or pod.py cross by value.
    """

    __slots__ = ("cloudpickle", "pickle")

    def __init__(self, *, pickle: bool = False, cloudpickle: bool = False) -> None:
        self.pickle = pickle
        self.cloudpickle = cloudpickle and pickle

    def __repr__(self) -> str:
        return f"CodecOptions(pickle={self.pickle}, cloudpickle={self.cloudpickle})"


#: The options of a connection that did not opt into anything.
DEFAULT_OPTIONS = CodecOptions()


class UnsupportedTypeError(TypeError):
    """A value has a type that cannot cross the pod boundary.

    Attributes:
        type_name: qualified name of the offending type.
        path: where the value sits inside what was being sent, e.g. ``args[1]['cfg'][3]``.
        reason: why, when there is more to say than "unsupported type".
    """

    def __init__(self, type_name: str, path: str, reason: str | None = None) -> None:
        self.type_name = type_name
        self.path = path
        self.reason = reason
        why = reason or (
            f"values that cross a pod boundary must be {SUPPORTED_TYPES}, or anything "
            "picklable with PodLoader(..., pickle=True)"
        )
        super().__init__(f"cannot send a value of type {type_name} (at {path}): {why}")

    def __reduce__(self):  # keep pickling working despite the custom __init__
        return (type(self), (self.type_name, self.path, self.reason))


class DecodeError(ValueError):
    """A received value is not something an encoder could have produced, or cannot be
    rebuilt on this side (a NumPy array where NumPy is missing, a refused pickle)."""


class NestingError(DecodeError):
    """A received value is nested deeper than this interpreter can rebuild.

    Not a broken peer: the sending side may have a deeper stack to spare. The value
    is refused; the receiver reads past the rest of the message (its attachments
    too), so the connection stays in step.
    """


#: Human-readable list of what crosses, for error messages and docs.
SUPPORTED_TYPES = (
    "None, bool, int, float, complex, str, bytes, bytearray, list, tuple, dict, set, "
    "frozenset, range, decimal.Decimal, fractions.Fraction, uuid.UUID, pathlib paths, "
    "datetime date/time/datetime/timedelta/timezone, zoneinfo.ZoneInfo, enum members, "
    "named tuples, dataclasses, NumPy arrays and scalars, nested in any way"
)


class Unsupported(Exception):
    """Raised by an encoder for a value it cannot write; becomes UnsupportedTypeError
    (with the value's path) at the top. ``reason`` says why, when there is more to say."""

    def __init__(self, reason: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason


class _TooDeep(Exception):
    """Internal: the value nests deeper than MAX_DEPTH (or contains itself)."""


#: How deeply containers may nest in a value that crosses. A fixed limit, checked by
#: the sender, so that whatever is sent can always be rebuilt by the receiver (whose
#: decoders recurse), whichever Python it runs; a value that contains itself hits it
#: at once. MongoDB allows 100 levels of documents; PyPods writes some containers as
#: two or three levels of BSON, so 200 Python levels stay well inside what pymongo
#: decodes with Python's default recursion limit.
MAX_DEPTH = 200

#: An encoder for one Python type: ``encode(value, encoding, depth)`` returns what
#: BSON carries; nested values go through ``encoding.value(x, depth)``.
EncodeFn = Callable[[Any, "Encoding", int], Any]
#: A decoder for one kind: ``decode(doc, decoding)`` returns the rebuilt value.
DecodeFn = Callable[[dict, "Decoding"], Any]

_ENCODERS: dict[type, EncodeFn] = {}
_DECODERS: dict[str, DecodeFn] = {}
_CHILDREN: list[Callable[[Any], Iterable[tuple[str, Any]] | None]] = []
#: Type families (subclasses: enums, named tuples, dataclasses, NumPy): each resolver
#: returns an encoder for a type, or None. Tried in order for types not registered.
_RESOLVERS: list[Callable[[type], EncodeFn | None]] = []
_resolved: weakref.WeakKeyDictionary[type, EncodeFn | None] = weakref.WeakKeyDictionary()
#: Set by ``pickling``: encodes any value as a pickle (when the options allow it).
_fallback: list[EncodeFn] = []


def register(
    t: type | None, kind: str | None, encode: EncodeFn | None, decode: DecodeFn | None
) -> None:
    """Register how values of type ``t`` are written, and how ``kind`` is read back."""
    if t is not None and encode is not None:
        _ENCODERS[t] = encode
    if kind is not None and decode is not None:
        _DECODERS[kind] = decode


def register_resolver(resolve: Callable[[type], EncodeFn | None]) -> None:
    """Register a resolver for a family of types (see ``_RESOLVERS``)."""
    _RESOLVERS.append(resolve)


def register_children(children: Callable[[Any], Iterable[tuple[str, Any]] | None]) -> None:
    """Register a function listing what a value contains as (path suffix, value), or
    returning None for values it does not know (used for error paths and cycles)."""
    _CHILDREN.append(children)


def encoder_for(t: type) -> EncodeFn | None:
    """The encoder for values of exact type ``t``, or None when it has none."""
    encoder = _ENCODERS.get(t)
    if encoder is not None:
        return encoder
    try:
        return _resolved[t]
    except KeyError:
        pass
    except TypeError:  # a type that cannot be weakly referenced: resolve every time
        return _resolve(t)
    encoder = _resolved[t] = _resolve(t)
    return encoder


def _resolve(t: type) -> EncodeFn | None:
    for resolve in _RESOLVERS:
        encoder = resolve(t)
        if encoder is not None:
            return encoder
    return None


# -- encoding ----------------------------------------------------------------------


class Encoding:
    """One act of encoding: the options in force and the attachments collected.

    Args:
        options: what the connection agreed to (pickle or not).
        attachments: where large binary payloads go (``attach``); None keeps
            everything inside the document (pod descriptions, defaults).
        careful: also tag strings that UTF-8 cannot encode (lone surrogates). Off by
            default because it costs a check per non-ASCII string; callers retry with
            it on when BSON refuses a string.
        arguments: this is a call's arguments, where functions are refused (they will
            become callbacks, never pickles).
    """

    __slots__ = ("arguments", "attachments", "careful", "options", "value")

    def __init__(
        self,
        options: CodecOptions = DEFAULT_OPTIONS,
        attachments: list[Any] | None = None,
        *,
        careful: bool = False,
        arguments: bool = False,
    ) -> None:
        self.options = options
        self.attachments = attachments
        self.careful = careful
        self.arguments = arguments
        self.value: Callable[[Any, int], Any] = self._careful if careful else self._fast

    def _fast(self, v: Any, depth: int = 0) -> Any:
        t = type(v)
        if t in _SCALARS:
            return v
        if t is str:
            return v if len(v) < ATTACH_MIN // 4 else self._long_str(v)
        if t is int:
            return v if INT64_MIN <= v <= INT64_MAX else _encode_big_int(v)
        if t is bytes:
            return v if len(v) < ATTACH_MIN else self.binary({TAG: "bytes"}, v)
        return self.container(v, t, depth)

    def _careful(self, v: Any, depth: int = 0) -> Any:
        t = type(v)
        if t is str:
            if len(v) >= ATTACH_MIN // 4:
                return self._long_str(v)
            return v if utf8_safe(v) else {TAG: "str", "v": v.encode("utf-8", "surrogatepass")}
        return self._fast(v, depth)

    def container(self, v: Any, t: type, depth: int) -> Any:
        """Encode anything that is not a plain scalar, nesting one level deeper."""
        if depth >= MAX_DEPTH:
            raise _TooDeep
        depth += 1
        if t is list:
            if len(v) >= PACK_MIN and self.attachments is not None:
                packed = _pack_numbers(v, self)
                if packed is not None:
                    return packed
            value = self.value
            return [value(x, depth) for x in v]
        if t is dict:
            return self.mapping(v, depth)
        encoder = encoder_for(t)
        if encoder is None:
            if self.options.pickle and _fallback:
                return _fallback[0](v, self, depth)
            raise Unsupported(_unsupported_reason(v))
        return encoder(v, self, depth)

    def mapping(self, d: Mapping[Any, Any], depth: int) -> dict:
        """A dict as a plain document when BSON carries its keys exactly, else tagged."""
        if TAG in d or "$ref" in d:
            return self.dict_items(d, depth)
        out = {}
        value = self.value
        careful = self.careful
        attachments = self.attachments
        attached = len(attachments) if attachments is not None else 0
        for k, x in d.items():
            if type(k) is not str or "\x00" in k or (careful and not utf8_safe(k)):
                if attachments is not None:
                    # The values met so far are encoded again below: drop what
                    # they attached, or it would be sent twice.
                    del attachments[attached:]
                return self.dict_items(d, depth)
            out[k] = value(x, depth)
        return out

    def dict_items(self, d: Mapping[Any, Any], depth: int) -> dict:
        value = self.value
        return {TAG: "dict", "v": [[value(k, depth), value(x, depth)] for k, x in d.items()]}

    def items(self, values: Iterable[Any], depth: int) -> list:
        """Encode each of ``values`` one level below ``depth`` (a container's payload)."""
        value = self.value
        return [value(x, depth) for x in values]

    def binary(self, doc: dict, data: Any) -> dict:
        """Put ``data`` (bytes-like) in ``doc``: inline as "v" if small, else attached as "x".

        ``bytes`` are attached as they are, and the receiver reads them back as
        ``bytes``; anything else as a byte view, read back into a writable buffer.
        """
        if type(data) is bytes:
            if len(data) < ATTACH_MIN or self.attachments is None:
                doc["v"] = data
            else:
                doc["x"] = self.attach(data)
            return doc
        view = memoryview(data)
        if view.ndim != 1 or view.format != "B":
            view = view.cast("B")
        if view.nbytes < ATTACH_MIN or self.attachments is None:
            doc["v"] = view.tobytes()
        else:
            doc["x"] = self.attach(view)
        return doc

    def attach(self, view: Any) -> int:
        """Add a raw buffer (bytes, or a byte memoryview) to send after the document;
        return its index."""
        attachments = self.attachments
        if attachments is None:
            raise Unsupported("this value is too large to be sent here")
        attachments.append(view)
        return len(attachments) - 1

    def _long_str(self, s: str) -> Any:
        try:
            data = s.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: tagged, as the careful encoder does
            return self.binary({TAG: "str"}, s.encode("utf-8", "surrogatepass"))
        if len(data) < ATTACH_MIN or self.attachments is None:
            return s
        return self.binary({TAG: "str"}, data)


def encode(
    value: Any,
    root: str = "value",
    *,
    options: CodecOptions = DEFAULT_OPTIONS,
    attachments: list[Any] | None = None,
    careful: bool = False,
) -> Any:
    """Return a BSON-safe value that ``decode`` turns back into ``value``.

    Args:
        value: what to send.
        root: how the value is named in error messages (``args``, ``result``...).
        options: pickle or not.
        attachments: a list that receives large payloads as raw buffers (sent after
            the document); None keeps everything inside the document.
        careful: see ``Encoding``.

    Raises:
        UnsupportedTypeError: a value somewhere inside cannot cross; the message names
            its type and where it is.
        ValueError: the value contains itself (a reference cycle) or is nested too deeply.
    """
    encoding = Encoding(options, attachments, careful=careful)
    try:
        return encoding.value(value, 0)
    except (Unsupported, _TooDeep, RecursionError) as exc:
        raise encoding_error(exc, value, root, encoding) from None


def encode_arguments(
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    *,
    options: CodecOptions = DEFAULT_OPTIONS,
    attachments: list[Any] | None = None,
    careful: bool = False,
) -> tuple[list, dict]:
    """Encode a call's positional and keyword arguments.

    The containers of the arguments do not count as a level of nesting: each argument
    may nest as deeply as a result may. Functions are refused, even when pickling.
    """
    encoding = Encoding(options, attachments, careful=careful, arguments=True)
    value = encoding.value
    try:
        encoded_args = [value(x, 0) for x in args]
    except (Unsupported, _TooDeep, RecursionError) as exc:
        raise encoding_error(exc, list(args), "args", encoding) from None
    try:
        encoded_kwargs = encoding.mapping(kwargs, 0) if kwargs else {}
    except (Unsupported, _TooDeep, RecursionError) as exc:
        raise encoding_error(exc, dict(kwargs), "kwargs", encoding) from None
    return encoded_args, encoded_kwargs


def is_plain_scalar(value: Any) -> bool:
    """True when ``value`` crosses BSON unchanged *and* comes back as itself.

    That is None, bool, float, short str and bytes, and ints within int32 (pymongo
    turns larger ones into ``Int64``). Such values skip both the encoder and the
    decoder: the shortcut that keeps a tiny call cheap.
    """
    t = type(value)
    if t is int:
        return _INT32_MIN <= value <= _INT32_MAX
    if t in _SCALARS:
        return True
    return t in _SIZED and len(value) < PLAIN_MAX_LEN


def all_plain_scalars(values: Sequence[Any]) -> bool:
    """True when every item of ``values`` is a plain scalar (see ``is_plain_scalar``)."""
    for value in values:
        t = type(value)
        if t is int:
            if not _INT32_MIN <= value <= _INT32_MAX:
                return False
        elif t in _SIZED:
            if len(value) >= PLAIN_MAX_LEN:
                return False
        elif t not in _SCALARS:
            return False
    return True


#: Strings and bytes shorter than this are plain scalars: too short to be attached
#: (a str of this many characters is at most ATTACH_MIN bytes of UTF-8).
PLAIN_MAX_LEN = ATTACH_MIN // 4

#: Lists at least this long are checked for being all floats or all ints, which
#: travel packed as an attachment (8 bytes per item, no per-item BSON).
PACK_MIN = 2048

#: Set by ``kinds``: packs a long list of floats or ints, or returns None.
_pack_numbers: Callable[[list, Encoding], Any] = lambda values, encoding: None  # noqa: E731


def utf8_safe(s: str) -> bool:
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _encode_big_int(v: int) -> dict:
    # Bytes, not decimal text: linear time, and no int-to-str digit limit (Python 3.11+).
    length = (v.bit_length() + 8) // 8
    return {TAG: "int", "v": v.to_bytes(length, "little", signed=True)}


def _unsupported_reason(v: Any) -> str | None:
    if callable(v) and not isinstance(v, type):
        return (
            "functions and other callables cannot be sent to or from a pod (pass data, "
            "or return a function with PodLoader(..., pickle=True))"
        )
    return None


# -- decoding ----------------------------------------------------------------------


class Decoding:
    """One act of decoding: the options in force and the attachments received.

    Each attachment may be used once; decoders get it with ``binary``.
    """

    __slots__ = ("_used", "attachments", "options")

    def __init__(
        self, options: CodecOptions = DEFAULT_OPTIONS, attachments: Sequence[Any] = ()
    ) -> None:
        self.options = options
        self.attachments = attachments
        self._used: set[int] = set()

    def value(self, v: Any) -> Any:
        t = type(v)
        if t is dict:
            if TAG in v:
                kind = v[TAG]
                decoder = _DECODERS.get(kind) if type(kind) is str else None
                if decoder is None:
                    raise DecodeError(f"unknown tagged kind {kind!r}")
                return decoder(v, self)
            value = self.value
            return {k: value(x) for k, x in v.items()}
        if t is list:
            value = self.value
            return [value(x) for x in v]
        if t in DECODES_TO_ITSELF:
            return v
        if t is Int64:
            return int(v)
        raise DecodeError(f"unexpected BSON value of type {qualified_name(t)}")

    def items(self, doc: dict) -> list:
        """The decoded items of a tagged document whose payload "v" is a list."""
        value = self.value
        return [value(x) for x in payload(doc, list)]

    def binary(self, doc: dict) -> Any:
        """The bytes of a tagged document: inline "v" (bytes) or attachment "x".

        An attachment comes as the writable buffer it was read into (a bytearray or
        an mmap), so that arrays can use it without a copy.
        """
        if "x" in doc:
            index = doc["x"]
            if type(index) is not int or not 0 <= index < len(self.attachments):
                raise DecodeError(f"{doc[TAG]} refers to attachment {index!r}, which was not sent")
            if index in self._used:
                raise DecodeError(f"attachment {index} is used twice")
            self._used.add(index)
            return self.attachments[index]
        return payload(doc, bytes)


def decode(
    value: Any, *, options: CodecOptions = DEFAULT_OPTIONS, attachments: Sequence[Any] = ()
) -> Any:
    """Inverse of ``encode``.

    Raises:
        DecodeError: the value holds something the encoder never produces (an unknown
            tag, a malformed payload, a BSON type PyPods does not use), or something
            this side cannot rebuild (see DecodeError).
    """
    try:
        return Decoding(options, attachments).value(value)
    except DecodeError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, OverflowError) as exc:
        raise DecodeError(f"malformed value: {exc}") from None
    except RecursionError:
        raise NestingError("the value is nested too deeply to rebuild here") from None
    except MemoryError:
        raise DecodeError("there is not enough memory here to rebuild it") from None


def payload(doc: dict, expected: type) -> Any:
    """The "v" field of a tagged document, checked to be of type ``expected``."""
    value = doc.get("v")
    if type(value) is not expected and not (expected is int and type(value) is Int64):
        raise DecodeError(f"{doc[TAG]} payload must be {expected.__name__}")
    return value


def _decode_dict(doc: dict, decoding: Decoding) -> dict:
    out = {}
    value = decoding.value
    for item in payload(doc, list):
        if type(item) is not list or len(item) != 2:
            raise DecodeError("dict items must be [key, value] pairs")
        out[value(item[0])] = value(item[1])
    return out


def _decode_str(doc: dict, decoding: Decoding) -> str:
    return str(decoding.binary(doc), "utf-8", "surrogatepass")


register(None, "dict", None, _decode_dict)
register(None, "str", None, _decode_str)
register(
    None, "int", None, lambda doc, d: int.from_bytes(payload(doc, bytes), "little", signed=True)
)
register(None, "bytes", None, lambda doc, d: bytes(d.binary(doc)))


# -- error reporting (slow paths, run only after a failure) ---------------------------


def children(value: Any) -> Iterator[tuple[str, Any]]:
    """The values nested directly in ``value``, with the path suffix of each."""
    t = type(value)
    if t is list or t is tuple:
        for i, x in enumerate(value):
            yield f"[{i}]", x
    elif t is dict:
        for k, x in value.items():
            yield f" (the key {k!r})", k
            yield f"[{k!r}]", x
    elif t not in DECODES_TO_ITSELF:
        for walk in _CHILDREN:
            found = walk(value)
            if found is not None:
                yield from found
                return


def _find_unsupported(value: Any, path: str, encoding: Encoding) -> tuple[str, Any, str | None]:
    """(path, value, reason) of the first value inside ``value`` that cannot be encoded."""
    found_children = False
    for suffix, child in children(value):
        found_children = True
        found = _find_unsupported(child, path + suffix, encoding)
        if found[1] is not _OK:
            return found
    if found_children:
        return path, _OK, None
    try:
        Encoding(encoding.options, None, arguments=encoding.arguments).value(value, 0)
    except Unsupported as exc:
        return path, value, exc.reason
    except (_TooDeep, RecursionError):
        pass
    return path, _OK, None


_OK = object()


def _too_deep_message(value: Any, root: str) -> str:
    cycle = _find_cycle(value, root, set())
    if cycle:
        return (
            f"cannot send a value that contains itself (at {cycle}): reference cycles cannot cross"
        )
    return f"cannot send {root}: it is nested too deeply (containers may nest {MAX_DEPTH} levels)"


def encoding_error(exc: BaseException, value: Any, root: str, encoding: Encoding) -> Exception:
    """The public error for a failed encoding: what failed, and where in ``value``."""
    if isinstance(exc, Unsupported):
        path, bad, reason = _find_unsupported(value, root, encoding)
        if bad is _OK:  # found nothing on a second look: report what the encoder said
            return UnsupportedTypeError(qualified_name(type(value)), root, exc.reason)
        return UnsupportedTypeError(qualified_name(type(bad)), path, reason)
    if isinstance(exc, _TooDeep):
        return ValueError(_too_deep_message(value, root))
    return ValueError(
        f"cannot send {root}: this thread's stack ran out while encoding it (it is called "
        "from very deep recursion); call from shallower code"
    )


def _find_cycle(value: Any, path: str, active: set) -> str | None:
    if id(value) in active:
        return path
    active.add(id(value))
    try:
        for suffix, x in children(value):
            found = _find_cycle(x, path + suffix, active)
            if found:
                return found
    except RecursionError:
        return None
    finally:
        active.discard(id(value))
    return None


def qualified_name(t: type) -> str:
    module = getattr(t, "__module__", None)
    name = getattr(t, "__qualname__", getattr(t, "__name__", repr(t)))
    return name if module in (None, "builtins") else f"{module}.{name}"


# The kinds register themselves with the engine above when imported.
from . import arrays, kinds, pickling, records  # noqa: E402,F401
