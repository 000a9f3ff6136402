"""NumPy arrays and scalars: dtype string, shape and raw bytes. Never a pickle.

The dtype travels as its ``dtype.str`` (``'<f8'``, ``'|b1'``, ``'<M8[ns]'``), which
every NumPy version reads the same way, so a pod on NumPy 1.x and a client on 2.x
exchange arrays. The data of an array goes as one attachment, written from the
array's own memory (no copy for C- or Fortran-ordered arrays) and read on the other
side into the buffer the new array then uses.

NumPy is only imported when an array or NumPy scalar is actually met, so a side that
never sees one needs no NumPy.
"""

from __future__ import annotations

import sys
from typing import Any

from . import codec
from .codec import TAG, DecodeError, Decoding, EncodeFn, Encoding, Unsupported, payload

#: dtype kinds that are plain bytes: bool, (unsigned) ints, floats, complex,
#: datetime64/timedelta64, bytes and unicode strings, and opaque void.
_FLAT_KINDS = frozenset("biufcmMSUV")

#: The most dimensions a received array may have (NumPy's own limit is 32 or 64).
_MAX_DIMS = 64


def _numpy_for_decoding(kind: str) -> Any:
    try:
        import numpy
    except ImportError:
        raise DecodeError(
            f"received a NumPy {kind}, but NumPy is not installed on this side: install "
            "numpy here (the client's environment, or the pod's requirements.txt)"
        ) from None
    return numpy


def _check_dtype(dtype: Any) -> None:
    if dtype.kind not in _FLAT_KINDS or dtype.hasobject or dtype.fields or dtype.subdtype:
        raise Unsupported(
            f"NumPy arrays of dtype {dtype} cannot cross: only plain dtypes (bool, "
            "numbers, datetime64, fixed-size strings) can, or use PodLoader(..., pickle=True)"
        )


def _encode_array(v: Any, encoding: Encoding, depth: int) -> dict:
    np = sys.modules["numpy"]
    _check_dtype(v.dtype)
    if v.flags.c_contiguous:
        order, flat = "C", v
    elif v.flags.f_contiguous:
        order, flat = "F", v.T  # the transpose of a Fortran array is C-ordered: no copy
    else:
        order, flat = "C", np.ascontiguousarray(v)  # a strided view: one copy
    doc = {TAG: "ndarray", "dtype": v.dtype.str, "shape": list(v.shape), "order": order}
    if v.nbytes == 0:
        doc["v"] = b""
        return doc
    return encoding.binary(doc, flat.reshape(-1).view(np.uint8))


def _received_dtype(np: Any, doc: dict) -> Any:
    text = doc.get("dtype")
    if type(text) is not str or len(text) > 64:
        raise DecodeError("malformed dtype")
    try:
        dtype = np.dtype(text)
        _check_dtype(dtype)
    except (TypeError, ValueError, Unsupported):
        raise DecodeError(f"dtype {text!r} cannot be rebuilt here") from None
    return dtype


def _decode_array(doc: dict, decoding: Decoding) -> Any:
    np = _numpy_for_decoding("array")
    dtype = _received_dtype(np, doc)
    shape = doc.get("shape")
    order = doc.get("order")
    if (
        type(shape) is not list
        or len(shape) > _MAX_DIMS
        or not all(isinstance(n, int) and n >= 0 for n in shape)
        or order not in ("C", "F")
    ):
        raise DecodeError("malformed array shape or order")
    shape = [int(n) for n in shape]
    count = 1
    for n in shape:
        count *= n
    if dtype.itemsize == 0 and dtype.kind in "SU":
        # NumPy widens these to one character: zeros of any count would be allocated
        # from no data at all. The encoder never sends them (arrays never have them).
        raise DecodeError(f"malformed array: dtype {dtype.str} has no size")
    data = decoding.binary(doc)
    if len(data) != count * dtype.itemsize:
        raise DecodeError(
            f"array data is {len(data)} bytes, but shape {shape} of {dtype} needs "
            f"{count * dtype.itemsize}"
        )
    if count == 0 or dtype.itemsize == 0:
        return np.zeros(shape, dtype, order=order)
    if type(data) is bytes:  # small, inline: copy, so that the array is writable
        data = bytearray(data)
    flat = np.frombuffer(data, dtype=dtype, count=count)
    if order == "F":
        return flat.reshape(shape[::-1]).T
    return flat.reshape(shape)


def _encode_scalar(v: Any, encoding: Encoding, depth: int) -> dict:
    np = sys.modules["numpy"]
    array = np.asarray(v)
    _check_dtype(array.dtype)
    return {TAG: "npscalar", "dtype": array.dtype.str, "v": array.tobytes()}


def _decode_scalar(doc: dict, decoding: Decoding) -> Any:
    np = _numpy_for_decoding("scalar")
    dtype = _received_dtype(np, doc)
    data = payload(doc, bytes)
    if len(data) != dtype.itemsize or dtype.itemsize == 0:
        raise DecodeError("NumPy scalar size does not match its dtype")
    return np.frombuffer(data, dtype=dtype)[0]


def _resolve(t: type) -> EncodeFn | None:
    module = getattr(t, "__module__", "") or ""
    if module != "numpy" and not module.startswith("numpy."):
        return None
    np = sys.modules.get("numpy")
    if np is None:
        return None
    if t is np.ndarray:
        return _encode_array
    if issubclass(t, np.generic) and not issubclass(t, np.object_):
        return _encode_scalar
    return None


codec.register_resolver(_resolve)
codec.register(None, "ndarray", None, _decode_array)
codec.register(None, "npscalar", None, _decode_scalar)
