"""What "the same value" means across a pod boundary, and hypothesis strategies for
values of every type the codec carries (shared by the codec and the pod tests)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import math
import pathlib
import sys

from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent / "pods"))
import numpy as np
import shared_records

from pypods.runtime.codec import ATTACH_MIN, TAG


def assert_same(original, returned, path="value"):
    """Equal in value *and* type, all the way down (nan equals nan here)."""
    assert type(returned) is type(original), (path, original, returned)
    if isinstance(original, np.ndarray):
        assert returned.dtype == original.dtype, path
        assert returned.shape == original.shape, path
        assert returned.tobytes() == original.tobytes(), path  # exact: nan, NaT, -0.0
        assert returned.flags.writeable, path
        return
    if isinstance(original, np.generic):
        assert returned.dtype == original.dtype, path
        assert returned.tobytes() == original.tobytes(), path
        return
    if isinstance(original, float) and math.isnan(original):
        assert math.isnan(returned), path
    elif isinstance(original, float):
        assert returned == original and math.copysign(1, returned) == math.copysign(1, original)
    elif isinstance(original, complex):
        assert_same(original.real, returned.real, path + ".real")
        assert_same(original.imag, returned.imag, path + ".imag")
    elif isinstance(original, decimal.Decimal):
        assert str(returned) == str(original), path
    elif isinstance(original, (list, tuple)):
        assert len(returned) == len(original), path
        for i, (a, b) in enumerate(zip(original, returned)):
            assert_same(a, b, f"{path}[{i}]")
    elif isinstance(original, dict):
        assert list(returned) == list(original), path
        for key in original:
            assert_same(original[key], returned[key], f"{path}[{key!r}]")
    elif dataclasses.is_dataclass(original):
        for field in dataclasses.fields(original):
            name = field.name
            assert_same(getattr(original, name), getattr(returned, name), f"{path}.{name}")
    else:
        assert returned == original, path
        if isinstance(original, (dt.datetime, dt.time)):
            assert returned.tzinfo == original.tzinfo, path
            assert returned.fold == original.fold, path
            if original.tzinfo is not None:
                assert type(returned.tzinfo) is type(original.tzinfo), path
                assert returned.tzname() == original.tzname(), path


# -- strategies -------------------------------------------------------------------------

zones = st.one_of(
    st.builds(
        dt.timezone,
        st.timedeltas(
            min_value=dt.timedelta(hours=-23, minutes=-59),
            max_value=dt.timedelta(hours=23, minutes=59),
        ),
    ),
    st.timezones(),
)
finite = st.floats(allow_nan=False, allow_infinity=False)
hashable_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(),
    st.binary(),
    st.builds(complex, finite, finite),
    st.decimals(allow_nan=False),
    st.fractions(),
    st.dates(),
    st.times(),
    st.times(timezones=zones),
    st.timedeltas(),
    st.datetimes(),
    st.datetimes(timezones=zones),
    st.uuids(),
    st.builds(pathlib.PurePosixPath, st.text(max_size=10)),
    st.builds(pathlib.PureWindowsPath, st.text(max_size=10)),
    st.builds(pathlib.Path, st.text(max_size=10)),
    st.builds(range, st.integers(), st.integers(), st.integers().filter(bool)),
    st.sampled_from(list(shared_records.Color)),
    st.sampled_from(list(shared_records.Level)),
    st.sampled_from([shared_records.Perm.R | shared_records.Perm.W, shared_records.Perm.X]),
    st.builds(shared_records.Frozen, st.text(max_size=5), st.integers()),
)
#: Bytes and strings around the size from which they travel as attachments: a short
#: random part repeated, so they are cheap to build yet differ from each other.
large_bytes = st.builds(
    lambda part, extra: (part * (ATTACH_MIN // len(part) + 1))[: ATTACH_MIN + extra],
    st.binary(min_size=1, max_size=8),
    st.integers(-2, 64),
)
large_text = st.builds(
    lambda part, extra: part * (ATTACH_MIN // len(part) + extra),
    st.text(min_size=1, max_size=4),
    st.integers(0, 2),
)
scalars = st.one_of(
    hashable_scalars,
    large_bytes,
    large_text,
    st.floats(allow_nan=True, allow_infinity=True),
    st.binary(max_size=20).map(bytearray),
    st.decimals(allow_nan=True),
)
arrays = hnp.arrays(
    dtype=st.one_of(
        hnp.boolean_dtypes(),
        hnp.integer_dtypes(endianness="="),
        hnp.unsigned_integer_dtypes(),
        hnp.floating_dtypes(),
        hnp.complex_number_dtypes(),
        hnp.datetime64_dtypes(),
    ),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
)
numpy_values = st.one_of(
    arrays,
    arrays.map(np.asfortranarray),
    arrays.filter(lambda a: a.ndim >= 1).map(lambda a: a[::-1]),
    hnp.from_dtype(np.dtype("float32")).map(np.float32),
    hnp.from_dtype(np.dtype("int16")).map(np.int16),
)
keys = st.one_of(hashable_scalars, st.tuples(st.integers()), st.frozensets(st.integers()))


def nested(leaves):
    """Values of every container kind, nested, with ``leaves`` at the bottom."""
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.lists(children, max_size=4).map(tuple),
            st.dictionaries(keys, children, max_size=4),
            st.dictionaries(
                st.sampled_from([TAG, "$ref", "$id", "v", "a\x00"]), children, max_size=3
            ),
            st.sets(hashable_scalars, max_size=4),
            st.frozensets(hashable_scalars, max_size=4),
            st.builds(shared_records.Point, children, children),
            st.builds(shared_records.Pair, children, children),
            st.builds(
                shared_records.Config,
                st.text(max_size=5),
                st.lists(children, max_size=3),
                children,
            ),
        ),
        max_leaves=20,
    )


values = nested(scalars)
values_with_arrays = nested(st.one_of(scalars, numpy_values))


class Local(enum.Enum):
    """An enum that only the test process knows (for fallbacks)."""

    ONE = 1
