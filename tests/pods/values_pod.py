"""Pod for tests/test_values.py: NumPy and cloudpickle installed, shared_records beside it."""

import collections
import dataclasses
import enum

import numpy as np
import shared_records


def echo(value):
    return value


def type_name(value):
    t = type(value)
    return f"{t.__module__}.{t.__qualname__}"


def describe_array(a):
    return {
        "dtype": a.dtype.str,
        "shape": list(a.shape),
        "fortran": bool(a.flags.f_contiguous and not a.flags.c_contiguous),
        "writeable": bool(a.flags.writeable),
        "sum": a.sum().item() if a.dtype.kind in "biufc" else None,
    }


def numpy_version():
    return np.__version__


def make_records():
    return (
        shared_records.Point(1, [2]),
        shared_records.Config("c", [1, 2], extra={"k": (1,)}),
        shared_records.Color.GREEN,
        shared_records.Perm.R | shared_records.Perm.X,
    )


PodPoint = collections.namedtuple("PodPoint", "a b")


@dataclasses.dataclass
class PodOnly:
    x: int
    y: list


class PodColor(enum.Enum):
    A = "a"


def make_local_records():
    return PodPoint(1, 2), PodOnly(3, [4]), PodColor.A


def make_multiplier(k):
    return lambda x: x * k


def sized_bytes(n):
    return b"x" * n


def arange(n):
    return np.arange(n, dtype=np.float64)


def make_unsendable():
    return {"ok": 1, "bad": [np.array([object()])]}


def total(values):
    return sum(values)
