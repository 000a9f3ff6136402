"""The opt-in fallback: any other value crosses as a pickle.

Off unless the loader was created with ``pickle=True``, and then on for both sides of
that connection only. Unpickling runs code the sender chooses and ties both sides to
compatible versions of every pickled class, hence opt-in (docs/user-guide.md).

Pickle protocol 5 hands large buffers (NumPy arrays inside a DataFrame, say) to a
callback instead of copying them into the pickle: they travel as attachments. With
cloudpickle on both sides, functions and classes defined in ``__main__`` or pod.py
travel by value. Functions passed as *arguments* are refused even so: they are kept
for callbacks into the client.
"""

from __future__ import annotations

import functools
import pickle
import types
from typing import Any

from . import codec
from .codec import TAG, DecodeError, Decoding, Encoding, Unsupported

#: Pickle protocol 5: out-of-band buffers; every Python PyPods supports has it.
PROTOCOL = 5

_FUNCTION_TYPES = (
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.BuiltinMethodType,
    functools.partial,
)


def cloudpickle_available() -> bool:
    """True when cloudpickle can be imported here."""
    try:
        import cloudpickle  # noqa: F401
    except ImportError:
        return False
    return True


def _encode_pickled(v: Any, encoding: Encoding, depth: int) -> dict:
    if encoding.arguments and isinstance(v, _FUNCTION_TYPES):
        raise Unsupported(
            "functions cannot be passed as arguments to a pod, not even with "
            "pickle=True (they are reserved for callbacks into the client); pass data"
        )
    buffers: list[int] = []

    def out_of_band(buffer: pickle.PickleBuffer) -> bool:
        try:
            raw = buffer.raw()
        except BufferError:  # not contiguous: keep it inside the pickle
            return True
        buffers.append(encoding.attach(raw))
        return False

    dumps = _cloudpickle_dumps() if encoding.options.cloudpickle else pickle.dumps
    callback = out_of_band if encoding.attachments is not None else None
    try:
        data = dumps(v, protocol=PROTOCOL, buffer_callback=callback)
    except RecursionError:
        raise
    except Exception as exc:
        raise Unsupported(f"it could not be pickled ({type(exc).__name__}: {exc})") from None
    doc = encoding.binary({TAG: "pickle"}, data)
    if buffers:
        doc["buffers"] = buffers
    return doc


def _cloudpickle_dumps() -> Any:
    import cloudpickle

    return cloudpickle.dumps


def _decode_pickled(doc: dict, decoding: Decoding) -> Any:
    if not decoding.options.pickle:
        raise DecodeError(
            "received a pickled value, but pickle is not enabled for this pod: create "
            "the loader with PodLoader(..., pickle=True) to accept pickles"
        )
    indexes = doc.get("buffers", [])
    if type(indexes) is not list:
        raise DecodeError("malformed pickle buffers")
    buffers = [decoding.binary({TAG: "pickle buffer", "x": i}) for i in indexes]
    data = decoding.binary(doc)
    try:
        return pickle.loads(data, buffers=buffers)
    except Exception as exc:
        raise DecodeError(
            f"a pickled value could not be unpickled here ({type(exc).__name__}: {exc}); "
            "its class must be importable on this side, in a compatible version "
            "(or install cloudpickle on both sides for classes defined in __main__)"
        ) from None


codec._fallback.append(_encode_pickled)
codec.register(None, "pickle", None, _decode_pickled)
