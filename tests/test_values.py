"""Values through a real pod: every supported type exactly, NumPy arrays at memory
speed, large payloads, opt-in pickle, and clear refusals that leave the pod usable."""

from __future__ import annotations

import collections
import datetime as dt
import decimal
import fractions
import pathlib
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest
import zoneinfo
from hypothesis import HealthCheck, given, settings

from pypods import PodLoader, RemoteError

from . import values
from .conftest import HERE, write_pod
from .values import assert_same, shared_records


def _write_values_pod(pods_dir: Path, name: str, requirements: str) -> Path:
    folder = write_pod(
        pods_dir,
        name,
        (HERE / "pods" / "values_pod.py").read_text(encoding="utf-8"),
        requirements=requirements,
    )
    records = (HERE / "pods" / "shared_records.py").read_text(encoding="utf-8")
    (folder / "shared_records.py").write_text(records, encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def _values_pods_dir(shared_pods_dir: Path) -> Path:
    _write_values_pod(shared_pods_dir, "values", "numpy\ncloudpickle\n")
    PodLoader("values", pods_dir=shared_pods_dir).load_pod().unload_pod()
    return shared_pods_dir


@pytest.fixture(scope="module")
def pod(_values_pods_dir: Path):
    """The values pod, shared by this module's tests (it keeps no state)."""
    loader = PodLoader("values", pods_dir=_values_pods_dir).load_pod()
    yield loader
    loader.unload_pod()


@pytest.fixture
def pickling_pod(_values_pods_dir: Path):
    loader = PodLoader("values", pods_dir=_values_pods_dir, pickle=True).load_pod()
    yield loader
    loader.unload_pod()


# -- every type, both ways ---------------------------------------------------------------

REPRESENTATIVES = [
    {1, 2, (3, 4)},
    frozenset({"a", frozenset({1})}),
    1 + 2j,
    decimal.Decimal("-1.500"),
    decimal.Decimal("NaN"),
    fractions.Fraction(-(10**30), 7),
    dt.date(2024, 2, 29),
    dt.time(23, 59, 59, 999999, tzinfo=dt.timezone(dt.timedelta(hours=5), "X")),
    dt.timedelta(days=-3, seconds=7, microseconds=11),
    dt.datetime(2024, 3, 31, 2, 30, tzinfo=zoneinfo.ZoneInfo("Europe/Berlin")),
    dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    pathlib.PurePosixPath("/etc/passwd"),
    pathlib.PureWindowsPath(r"C:\Users\x"),
    pathlib.Path("relative/file.txt"),
    bytearray(b"\x00\x01"),
    range(-5, 10**20, 3),
    shared_records.Color.RED,
    shared_records.Level.HIGH,
    shared_records.Perm.R | shared_records.Perm.W,
    shared_records.Point(1, 2),
    shared_records.Pair("l", "r"),
    shared_records.Config("cfg", [1, 2]),
    shared_records.Frozen("k", 1),
    {1: "a", (2, 3): "b", None: "c", frozenset({4}): "d"},
    np.arange(6, dtype=np.int16).reshape(2, 3),
    np.float32(0.5),
    np.bool_(True),
    np.array(7, dtype=np.uint64),
]


@pytest.mark.parametrize("value", REPRESENTATIVES, ids=lambda v: type(v).__name__)
def test_each_type_arrives_as_itself_and_comes_back_as_itself(pod, value):
    t = type(value)
    assert pod.type_name(value) == f"{t.__module__}.{t.__qualname__}"
    assert_same(value, pod.echo(value))


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(values.values_with_arrays)
def test_any_supported_value_round_trips_through_a_pod(pod, value):
    assert_same(value, pod.echo(value))


def test_records_come_back_as_their_class_when_both_sides_have_it(pod):
    point, config, color, perm = pod.make_records()
    assert type(point) is shared_records.Point and point == (1, [2])
    assert type(config) is shared_records.Config
    assert config == shared_records.Config("c", [1, 2], extra={"k": (1,)})
    assert color is shared_records.Color.GREEN
    assert perm == shared_records.Perm.R | shared_records.Perm.X


def test_records_of_classes_only_the_pod_has_come_back_as_plain_data(pod):
    point, only, color = pod.make_local_records()
    assert type(point) is tuple and point == (1, 2)
    assert type(only) is dict and only == {"x": 3, "y": [4]}
    assert color == "a"


def test_an_enum_only_the_client_has_arrives_as_its_value(pod):
    assert pod.echo(values.Local.ONE) == 1


# -- NumPy --------------------------------------------------------------------------------

DTYPES = [
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "longdouble", "complex64", "complex128", "clongdouble",
    ">i4", ">f8", "datetime64[ns]", "timedelta64[s]", "U3", "S2",
]  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES)
def test_arrays_of_every_plain_dtype_cross_exactly(pod, dtype):
    array = (np.arange(24) % 7).astype(dtype).reshape(2, 3, 4)
    seen = pod.describe_array(array)
    assert seen["dtype"] == array.dtype.str and seen["shape"] == [2, 3, 4]
    assert_same(array, pod.echo(array))


@pytest.mark.parametrize(
    ("array", "fortran"),
    [
        (np.asfortranarray(np.arange(12.0).reshape(3, 4)), True),
        (np.arange(100.0).reshape(10, 10)[::3, 1::2], False),  # a strided view
        (np.arange(10.0)[::-1], False),
        (np.array(3.5), False),  # 0-d
        (np.zeros((0, 5)), False),
    ],
    ids=["fortran", "strided", "reversed", "0-d", "empty"],
)
def test_array_layouts_cross_with_shape_values_and_order(pod, array, fortran):
    seen = pod.describe_array(array)
    assert seen["shape"] == list(array.shape) and seen["fortran"] is fortran
    assert seen["writeable"] is True
    if array.size:
        assert seen["sum"] == array.sum()
    back = pod.echo(array)
    assert_same(array, back)
    back[...] = 0  # results are ordinary writable arrays


def test_an_array_of_objects_is_refused_with_its_path_and_the_pod_stays_usable(pod):
    pid = pod.pid
    with pytest.raises(TypeError, match=r"at args\[0\]\['a'\]\).*dtype object"):
        pod.echo({"a": np.array([object()])})
    with pytest.raises(TypeError, match=r"result\['bad'\]\[0\]"):
        pod.make_unsendable()
    assert pod.echo(1) == 1 and pod.pid == pid


# -- size ------------------------------------------------------------------------------------


def test_large_bytes_and_arrays_cross_whole(pod):
    blob = np.random.default_rng(1).bytes(200 * 1000 * 1000)
    assert pod.echo(blob) == blob
    array = pod.arange(40_000_000)  # 320 MB
    assert array.shape == (40_000_000,) and array[-1] == 39_999_999.0
    assert pod.describe_array(array)["sum"] == array.sum()


def test_several_large_bytes_and_strings_cross_in_one_call_each_way(pod):
    value = [b"a" * 40_000, "s" * 40_000, {"blob": b"b" * 50_000, 2: "int key"}, b"c" * 60_000]
    assert_same(value, pod.echo(value))


def test_a_long_list_of_floats_and_of_ints_crosses_exactly(pod):
    floats = [i / 3 for i in range(1_000_000)] + [-0.0, float("inf")]
    assert_same(floats, pod.echo(floats))
    ints = [*range(-500_000, 500_000), 2**63 - 1]
    assert_same(ints, pod.echo(ints))
    assert pod.total(ints) == sum(ints)
    mixed = [1.0] * 5000 + [1]  # one int among floats: still exact
    assert_same(mixed, pod.echo(mixed))


def test_messages_above_the_maximum_size_are_refused_and_the_pod_stays_usable(
    _values_pods_dir: Path,
):
    with PodLoader("values", pods_dir=_values_pods_dir, max_message_size=1 << 20) as pod:
        pid = pod.pid
        with pytest.raises(ValueError, match="maximum message size"):
            pod.echo(b"x" * (2 << 20))
        with pytest.raises(ValueError, match="maximum message size"):
            pod.echo({str(i): i for i in range(200_000)})  # all inside the document
        with pytest.raises(ValueError, match="maximum message size"):
            pod.sized_bytes(2 << 20)
        assert pod.sized_bytes(1000) == b"x" * 1000 and pod.pid == pid


def test_max_message_size_is_checked():
    with pytest.raises(ValueError, match="max_message_size"):
        PodLoader("values", max_message_size=10)
    with pytest.raises(TypeError, match="max_message_size"):
        PodLoader("values", max_message_size="big")


# -- refusals ------------------------------------------------------------------------------


def test_unsupported_values_name_type_and_path_and_the_pod_stays_usable(pod):
    pid = pod.pid
    with pytest.raises(TypeError, match=r"collections.OrderedDict \(at args\[0\]\[1\]\)"):
        pod.echo([1, collections.OrderedDict(a=1)])
    with pytest.raises(TypeError, match=r"function \(at args\[0\]\).*callables"):
        pod.echo(value=lambda: 1)
    with pytest.raises(TypeError, match=r"at result"):
        pod.make_multiplier(2)  # a function can only come back with pickle=True
    cycle: list = [1]
    cycle.append(cycle)
    with pytest.raises(ValueError, match=r"contains itself \(at args\[0\]\[1\]\)"):
        pod.echo(cycle)
    assert pod.echo("still here") == "still here" and pod.pid == pid


def test_a_pod_without_numpy_refuses_an_array_clearly_and_stays_usable(toolbox):
    pid = toolbox.get_pid()
    with pytest.raises(RemoteError, match="NumPy is not installed on this side") as info:
        toolbox.echo(np.arange(3))
    assert isinstance(info.value, TypeError)
    assert toolbox.get_pid() == pid and toolbox.add(1, 2) == 3


def test_a_client_without_numpy_refuses_an_array_clearly_and_stays_usable(_values_pods_dir):
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["numpy"] = None  # as if NumPy were not installed here
        from pypods import PodLoader, PodProtocolError
        with PodLoader("values", pods_dir={str(_values_pods_dir)!r}) as pod:
            try:
                pod.arange(3)
            except PodProtocolError as exc:
                print("refused:", exc)
            print("then:", pod.echo([1, 2]))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    ).stdout
    assert "refused:" in out and "NumPy is not installed on this side" in out
    assert "then: [1, 2]" in out


# -- pickle, opt-in -------------------------------------------------------------------------


def test_pickle_is_off_unless_the_loader_opts_in(pod):
    with pytest.raises(TypeError, match="pickle=True"):
        pod.echo(collections.OrderedDict(a=1))


def test_with_pickle_other_values_cross_and_functions_come_back(pickling_pod):
    ordered = collections.OrderedDict(b=1, a=np.arange(3))
    back = pickling_pod.echo(ordered)
    assert type(back) is collections.OrderedDict and list(back) == ["b", "a"]
    assert np.array_equal(back["a"], np.arange(3))
    triple = pickling_pod.make_multiplier(3)  # a lambda, by value (cloudpickle)
    assert triple(5) == 15


def test_with_pickle_classes_only_the_client_has_cross_by_value(pickling_pod):
    class Temperature:  # defined here only: the pod cannot import it
        def __init__(self, degrees):
            self.degrees = degrees

    back = pickling_pod.echo([Temperature(21.5)])
    assert back[0].degrees == 21.5 and type(back[0]).__name__ == "Temperature"


def test_with_pickle_functions_are_still_refused_as_arguments(pickling_pod):
    pid = pickling_pod.pid
    with pytest.raises(TypeError, match="reserved for callbacks"):
        pickling_pod.echo([len])
    with pytest.raises(TypeError, match="reserved for callbacks"):
        pickling_pod.echo(lambda x: x)
    assert pickling_pod.echo(1) == 1 and pickling_pod.pid == pid


def test_a_value_that_cannot_be_pickled_is_refused_with_its_path(pickling_pod):
    import threading

    with pytest.raises(TypeError, match=r"at args\[0\]\['lock'\].*could not be pickled"):
        pickling_pod.echo({"lock": threading.Lock()})
    assert pickling_pod.echo(2) == 2


# -- NumPy 1.x in a pod, 2.x here -----------------------------------------------------------


@pytest.mark.skipif(
    not np.__version__.startswith("2."),
    reason="needs NumPy 2.x in the client (pip install -U numpy)",
)
def test_arrays_cross_between_numpy_1_in_the_pod_and_numpy_2_here(pods_dir):
    _write_values_pod(pods_dir, "numpy1", "numpy==1.26.4\ncloudpickle\n")
    with PodLoader("numpy1", pods_dir=pods_dir) as pod:
        assert pod.numpy_version() == "1.26.4"
        for dtype in ("bool", "int8", "uint64", "float16", "float64", "complex128",
                      ">i4", "datetime64[ms]", "U4"):  # fmt: skip
            array = (np.arange(12) % 5).astype(dtype).reshape(3, 4)
            assert pod.describe_array(array)["dtype"] == array.dtype.str
            assert_same(array, pod.echo(array))
        assert_same(
            np.asfortranarray(np.ones((3, 2))), pod.echo(np.asfortranarray(np.ones((3, 2))))
        )
        assert_same(np.float32(2.5), pod.echo(np.float32(2.5)))
        made_there = pod.arange(1_000_000)
        assert type(made_there) is np.ndarray and made_there.sum() == 499999500000.0
