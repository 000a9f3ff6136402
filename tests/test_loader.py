"""PodLoader end to end: real venvs, real pod processes."""

from __future__ import annotations

import datetime as dt
import inspect
import math
import os
import shutil
import threading
from pathlib import Path

import pytest

import pypods
import pypods.pods
from pypods import (
    NoSuchFunctionError,
    PodCrashedError,
    PodError,
    PodLoader,
    PodNotLoadedError,
    PodTimeoutError,
)

from .conftest import kill, pid_alive, wait_until, write_pod

REPO = Path(__file__).resolve().parent.parent


# -- names and options --------------------------------------------------------------


@pytest.mark.parametrize("name", ["../x", "1abc", "a-b", "", "class", "a b", "x/y", "é/", None, 5])
def test_invalid_pod_names_raise_before_touching_the_disk(tmp_path, name):
    with pytest.raises(ValueError, match="pod name"):
        PodLoader(name, pods_dir=tmp_path / "pods")
    assert not (tmp_path / "pods").exists()


def test_option_types_are_checked(tmp_path):
    with pytest.raises(TypeError, match="namespace"):
        PodLoader("ok", [], pods_dir=tmp_path)
    with pytest.raises(ValueError, match="timeout"):
        PodLoader("ok", pods_dir=tmp_path, timeout=0)
    with pytest.raises(ValueError, match="timeout"):
        PodLoader("ok", pods_dir=tmp_path, timeout=-1)
    with pytest.raises(TypeError, match="env"):
        PodLoader("ok", pods_dir=tmp_path, env={"A": 1})
    with pytest.raises(TypeError, match="python"):
        PodLoader("ok", pods_dir=tmp_path, python=3.9)
    assert not any(tmp_path.iterdir())


def test_both_import_paths_give_the_same_loader():
    assert pypods.pods.PodLoader is pypods.PodLoader
    assert pypods.pods.PodError is pypods.PodError


def test_pods_dir_defaults_to_cwd_pods_or_pypods_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PYPODS_DIR", raising=False)
    assert PodLoader("x").pods_dir == tmp_path / "pods"
    monkeypatch.setenv("PYPODS_DIR", str(tmp_path / "elsewhere"))
    assert PodLoader("x").pods_dir == tmp_path / "elsewhere"


# -- the original README flow -------------------------------------------------------


def test_hello_world_flow_creates_the_pod_and_serves_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PYPODS_DIR", raising=False)
    namespace: dict = {}
    loader = PodLoader("hello_world_pod", namespace)
    assert loader.load_pod() is loader
    folder = tmp_path / "pods" / "hello_world_pod"
    template = (folder / "pod.py").read_text()
    assert template.startswith('"""') and "hello_world_pod" in template
    assert (folder / "requirements.txt").read_text() == ""
    assert (folder / "venv" / "pyvenv.cfg").is_file()
    assert loader.functions == {}  # the template serves nothing until you write something
    loader.unload_pod()

    (folder / "module_test").mkdir()
    (folder / "module_test" / "__init__.py").write_text(
        "def foo_in_module_test():\n    return 'foo_in_module_test'\n"
    )
    (folder / "pod.py").write_text(
        template
        + "\nfrom pods.hello_world_pod.module_test import foo_in_module_test\n"
        + "\ndef foo(x, y):\n    return x + y\n"
    )
    loader.load_pod()
    assert namespace["foo"](1, 2) == 3
    assert namespace["foo_in_module_test"]() == "foo_in_module_test"
    loader.unload_pod()
    assert "foo" not in namespace and "foo_in_module_test" not in namespace


def test_the_example_pod_in_the_repository_works(tmp_path):
    pods = tmp_path / "pods"
    skip = shutil.ignore_patterns("venv", "__pycache__", ".venv.lock")
    shutil.copytree(REPO / "pods" / "hello_world_pod", pods / "hello_world_pod", ignore=skip)
    namespace: dict = {}
    with PodLoader("hello_world_pod", namespace, pods_dir=pods):
        assert namespace["foo"](1, 2) == 3
        assert namespace["foo_in_module_test"]() == "foo_in_module_test"
        assert Path(namespace["whoami"]()["prefix"]) == pods / "hello_world_pod" / "venv"


# -- calling ------------------------------------------------------------------------


def test_attribute_access_call_and_namespace_injection(toolbox):
    assert toolbox.add(1, 2) == 3
    assert toolbox.call("add", 2, y=5) == 7
    assert toolbox.functions["add"](3, 4) == 7
    assert "add" in dir(toolbox)


def test_injection_covers_public_functions_defined_and_imported(toolbox):
    served = set(toolbox.functions)
    assert {"add", "echo", "counter", "helper_value"} - {"helper_value"} <= served
    assert "_private_helper" not in served
    assert "NotAFunction" not in served  # classes are not functions
    assert "helper_value" not in served  # not callable
    assert "PodSpecificError" not in served
    assert "datetime" not in served and "os" not in served  # modules are not functions


def test_module_state_lives_across_calls_and_a_reload_restarts_it(toolbox):
    assert [toolbox.counter() for _ in range(3)] == [1, 2, 3]
    first_pid = toolbox.get_pid()
    toolbox.load_pod()
    assert toolbox.get_pid() != first_pid
    assert toolbox.counter() == 1
    assert not pid_alive(first_pid)


def test_one_process_serves_every_call(toolbox):
    pids = {toolbox.get_pid() for _ in range(20)}
    assert pids == {toolbox.pid}


def test_the_pod_runs_in_its_own_venv_without_client_paths(toolbox, shared_pods_dir):
    info = toolbox.python_info()
    assert Path(info["prefix"]) == shared_pods_dir / "toolbox" / "venv"
    assert info["path"][0] == str(shared_pods_dir / "toolbox")
    client_site = [p for p in __import__("sys").path if "site-packages" in p]
    assert not set(client_site) & set(info["path"])
    assert os.getcwd() not in info["path"][:1]


@pytest.mark.parametrize(
    "value",
    [
        None, True, 0, -7, 2**31, 2**63, -(10**50), 1.5, math.inf, "text", "nul\x00", b"\x00\xff",
        [1, [2]], (1, (2, [3])), {"a": (1, 2), "b": {"c": None}}, {1: "int key"},
        dt.datetime(2024, 1, 2, 3, 4, 5, 678901),
        dt.datetime(2024, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    ],
    ids=repr,
)  # fmt: skip
def test_values_round_trip_through_a_real_pod(toolbox, value):
    returned = toolbox.echo(value)
    assert returned == value and type(returned) is type(value)


def test_nan_round_trips(toolbox):
    assert math.isnan(toolbox.echo(math.nan))


def test_values_arrive_in_the_pod_with_their_types(toolbox):
    assert toolbox.echo_type((1, 2)) == "tuple"
    assert toolbox.echo_type(2**70) == "int"
    assert toolbox.echo_type(dt.datetime(2020, 1, 1)) == "datetime"
    assert toolbox.now() == dt.datetime(2024, 5, 6, 7, 8, 9, 123456)


def test_unsendable_argument_raises_type_error_and_the_pod_stays_usable(toolbox):
    pid = toolbox.get_pid()
    with pytest.raises(TypeError, match=r"ellipsis \(at args\[0\]\['x'\]\[1\]\)"):
        toolbox.echo({"x": [1, ...]})
    with pytest.raises(TypeError, match=r"object \(at kwargs\['k'\]\)"):
        toolbox.describe_args(k=object())
    assert toolbox.add(1, 1) == 2 and toolbox.get_pid() == pid


def test_unsendable_result_raises_type_error_and_the_pod_stays_usable(toolbox):
    pid = toolbox.get_pid()
    with pytest.raises(
        TypeError,
        match=r"return_unsendable\(\) returned.*list_iterator.*result\['bad'\]\[1\]",
    ):
        toolbox.return_unsendable()
    with pytest.raises(ValueError, match="contains itself"):
        toolbox.return_self_referencing()
    assert toolbox.add(1, 1) == 2 and toolbox.get_pid() == pid


def test_threads_each_get_their_own_answer(toolbox):
    results: dict = {}
    errors: list = []

    def worker(n):
        try:
            results[n] = [toolbox.add(n, i) for i in range(200)]
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == {n: [n + i for i in range(200)] for n in range(8)}


def test_calls_from_other_threads_during_a_reload_wait_for_the_new_pod(toolbox):
    """Through the loader's attribute, call(), and a proxy taken before the reload."""
    held_proxy = toolbox.add
    ways = [lambda: toolbox.add(1, 2), lambda: toolbox.call("add", 1, 2), lambda: held_proxy(1, 2)]
    answers: list = []
    pids = set()
    stop = threading.Event()

    def caller(way):
        while not stop.is_set():
            try:
                answers.append(way())
            except Exception as exc:
                answers.append(exc)

    threads = [threading.Thread(target=caller, args=(way,)) for way in ways]
    for t in threads:
        t.start()
    for _ in range(4):
        toolbox.load_pod()
        pids.add(toolbox.pid)
    stop.set()
    for t in threads:
        t.join()
    assert len(pids) == 4
    # A call in flight when its pod is stopped fails, as documented; no call ever
    # finds the pod missing or its functions gone.
    in_flight = [a for a in answers if isinstance(a, PodCrashedError)]
    assert all("unloaded during the call" in str(a) for a in in_flight)
    assert len(in_flight) <= 4 * len(ways)
    assert answers.count(3) == len(answers) - len(in_flight) > 0


#: A pod that takes 5 s to start once its folder holds a file named "slow".
SLOW_WHEN_TOLD = """
import os, time
if os.path.exists(os.path.join(os.path.dirname(__file__), "slow")):
    time.sleep(5)

def ping():
    return "pong"

def crash():
    os._exit(1)
"""


def test_a_call_waiting_for_a_reload_still_honours_its_timeout(pods_dir):
    write_pod(pods_dir, "slow_start", SLOW_WHEN_TOLD)
    with PodLoader("slow_start", pods_dir=pods_dir, timeout=0.5) as loader:
        held_proxy = loader.ping
        (pods_dir / "slow_start" / "slow").touch()
        reload = threading.Thread(target=loader.load_pod)
        reload.start()
        assert wait_until(lambda: not loader.loaded)  # the reload has begun
        with pytest.raises(PodTimeoutError, match="waiting for load_pod"):
            held_proxy()
        reload.join()
        assert held_proxy() == "pong"


def test_a_call_waiting_for_another_threads_restart_honours_its_timeout(pods_dir):
    write_pod(pods_dir, "slow_restart", SLOW_WHEN_TOLD)
    with PodLoader("slow_restart", pods_dir=pods_dir) as loader:
        with pytest.raises(PodCrashedError):
            loader.crash()
        (pods_dir / "slow_restart" / "slow").touch()
        restarting = threading.Thread(target=loader.ping)  # restarts: a 5 s import
        restarting.start()
        # the restart has taken the loader's lock (held through the slow import)
        assert wait_until(
            lambda: not loader._lock.acquire(blocking=False) or loader._lock.release()
        )
        loader.timeout = 0.5
        with pytest.raises(PodTimeoutError, match="restarted by another thread"):
            loader.ping()
        restarting.join()
        loader.timeout = None
        assert loader.ping() == "pong"


@pytest.mark.parametrize("timeout", [1e10, 10**400])
def test_a_huge_timeout_is_no_limit_for_lookups_either(toolbox, timeout):
    toolbox.timeout = timeout
    with pytest.raises(NoSuchFunctionError):
        toolbox.call("no_such_function")
    assert getattr(toolbox, "no_such_function", None) is None
    assert toolbox.add(1, 2) == 3


# -- proxies ------------------------------------------------------------------------


def test_proxies_look_like_the_pod_functions(toolbox):
    add = toolbox.add
    assert add.__name__ == "add" and add.__qualname__ == "add"
    assert add.__doc__ == "Add two values, inside the pod."
    assert add.__module__ == "pod"
    assert str(inspect.signature(add)) == "(x, y)"
    assert str(inspect.signature(toolbox.positional_only)) == "(a, b, /, c=0)"
    assert str(inspect.signature(toolbox.annotated)) == "(x: int, y: 'list[str]' = None) -> dict"
    sig = inspect.signature(toolbox.with_defaults)
    assert str(sig.parameters["b"]) == "b=2" and str(sig.parameters["c"]) == "c=3"
    assert "pod default" in repr(sig.parameters["d"].default)
    assert "object object" in repr(sig.parameters["d"].default)


def test_help_shows_the_pod_signature_and_doc(toolbox, capsys):
    help(toolbox.add)
    out = capsys.readouterr().out
    assert "add(x, y)" in out and "Add two values, inside the pod." in out


def test_wrong_arguments_raise_type_error_without_a_round_trip(toolbox):
    pid = toolbox.pid
    kill(pid)
    assert wait_until(lambda: not pid_alive(pid))
    # The pod is dead: a round trip would raise PodCrashedError, not TypeError.
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'y'"):
        toolbox.add(1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'z'"):
        toolbox.add(1, 2, z=3)
    with pytest.raises(TypeError):
        toolbox.positional_only(a=1, b=2)


def test_defaults_are_never_sent_so_the_pod_uses_its_own(toolbox):
    assert toolbox.with_defaults(1) == [1, 2, 3, "default"]
    assert toolbox.with_defaults(1, d="given") == [1, 2, 3, "given"]
    assert toolbox.with_defaults(1, c=9) == [1, 2, 9, "default"]


def test_any_parameter_names_work(toolbox):
    assert toolbox.odd_names(1, 2) == [1, 2, None, "fn", ()]
    assert toolbox.odd_names(self=1, name=2, func_name=3, fn=4, args=(5,)) == [1, 2, 3, 4, (5,)]
    assert toolbox.call("odd_names", 1, name=2) == [1, 2, None, "fn", ()]


def test_var_arguments_pass_through(toolbox):
    assert toolbox.describe_args(1, (2,), k="v") == {"args": [1, (2,)], "kwargs": {"k": "v"}}


# -- namespace hygiene --------------------------------------------------------------


def test_unload_removes_exactly_what_was_injected_and_restores_shadowed(_toolbox_built):
    sentinel = object()
    namespace = {"add": sentinel, "unrelated": 1}
    loader = PodLoader("toolbox", namespace, pods_dir=_toolbox_built).load_pod()
    assert namespace["add"] is not sentinel and namespace["add"](1, 2) == 3
    replacement = object()
    namespace["echo"] = replacement  # rebound by the user: must be left alone
    loader.unload_pod()
    assert namespace["add"] is sentinel
    assert namespace["echo"] is replacement
    assert namespace["unrelated"] == 1
    assert "counter" not in namespace


def test_reload_serves_the_new_pod_py(pods_dir):
    write_pod(pods_dir, "changing", "def old():\n    return 'old'\n")
    namespace: dict = {}
    loader = PodLoader("changing", namespace, pods_dir=pods_dir).load_pod()
    assert namespace["old"]() == "old"
    write_pod(pods_dir, "changing", "def new(x=1):\n    return x\n")
    loader.load_pod()
    assert "old" not in namespace
    assert namespace["new"]() == 1
    with pytest.raises(NoSuchFunctionError):
        loader.old()
    loader.unload_pod()


def test_reload_stops_the_old_process_before_starting_the_new(pods_dir):
    marker = pods_dir / "holder.lock"
    write_pod(
        pods_dir,
        "exclusive",
        f"""
        import fcntl, os
        _held = open({str(marker)!r}, "w")
        fcntl.flock(_held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails if another pod holds it

        def who():
            return os.getpid()
        """,
    )
    loader = PodLoader("exclusive", pods_dir=pods_dir).load_pod()
    first = loader.who()
    loader.load_pod()  # would fail to import if the old pod still held the lock
    assert loader.who() != first
    loader.unload_pod()


def test_failed_reload_leaves_the_pod_unloaded_and_a_fix_loads_again(pods_dir):
    folder = write_pod(pods_dir, "keeper", "def ok():\n    return 'ok'\n")
    namespace: dict = {}
    loader = PodLoader("keeper", namespace, pods_dir=pods_dir).load_pod()
    (folder / "pod.py").write_text("def ok(:\n")
    with pytest.raises(PodError, match="SyntaxError"):
        loader.load_pod()
    assert not loader.loaded and "ok" not in namespace
    (folder / "pod.py").write_text("def ok():\n    return 'fixed'\n")
    loader.load_pod()
    assert namespace["ok"]() == "fixed"
    loader.unload_pod()


def test_all_limits_what_is_served(pods_dir):
    write_pod(
        pods_dir,
        "exported",
        """
        __all__ = ["visible", "Widget"]

        def visible():
            return 1

        def hidden():
            return 2

        class Widget:
            pass
        """,
    )
    with PodLoader("exported", pods_dir=pods_dir) as pod:
        assert set(pod.functions) == {"visible", "Widget"}


def test_typing_names_imported_into_pod_py_are_not_served(pods_dir):
    write_pod(
        pods_dir,
        "typed",
        """
        from functools import partial
        from typing import Any, List, Optional

        def f(x: Optional[int]) -> List[Any]:
            return [x]

        g = partial(f, 5)
        """,
    )
    namespace = {"List": list}
    with PodLoader("typed", namespace, pods_dir=pods_dir) as pod:
        assert set(pod.functions) == {"f", "g"}  # partial itself is a class
        assert namespace["List"] is list
        assert pod.g() == [5]


def test_context_manager_loads_and_unloads(_toolbox_built):
    namespace: dict = {}
    with PodLoader("toolbox", namespace, pods_dir=_toolbox_built) as pod:
        pid = pod.pid
        assert namespace["add"](2, 2) == 4
    assert "add" not in namespace
    assert wait_until(lambda: not pid_alive(pid))
    assert not pod.loaded


def test_calls_after_unload_raise_not_loaded(_toolbox_built):
    namespace: dict = {}
    loader = PodLoader("toolbox", namespace, pods_dir=_toolbox_built).load_pod()
    add = namespace["add"]
    loader.unload_pod()
    with pytest.raises(PodNotLoadedError, match="load_pod"):
        add(1, 2)
    with pytest.raises(AttributeError, match="not loaded"):
        loader.add  # noqa: B018
    loader.unload_pod()  # a second unload is harmless


def test_pods_dir_with_spaces_and_unicode(tmp_path):
    pods = tmp_path / "my pods ünï"
    write_pod(pods, "spaced", "def hello():\n    return 'hi'\n")
    with PodLoader("spaced", pods_dir=pods) as pod:
        assert pod.hello() == "hi"


def test_env_reaches_the_pod_and_pythonpath_does_not_leak(pods_dir, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/client/only/path")
    write_pod(pods_dir, "envy", "import os, sys\ndef get(k):\n    return os.environ.get(k)\n"
              "def path():\n    return sys.path\n")  # fmt: skip
    with PodLoader("envy", pods_dir=pods_dir, env={"POD_SETTING": "42"}) as pod:
        assert pod.get("POD_SETTING") == "42"
        assert pod.get("PYTHONPATH") is None
        assert "/client/only/path" not in pod.path()
        assert pod.get("VIRTUAL_ENV") == str(pods_dir / "envy" / "venv")


def test_legacy_main_block_is_never_run(pods_dir):
    write_pod(
        pods_dir,
        "legacy",
        """
        def foo(x, y):
            return x + y

        # Don't change anything here!
        if __name__ == "__main__":
            from pypods.pods import PodListener
            pl = PodListener()
            raise SystemExit("the legacy block ran")
        """,
    )
    with PodLoader("legacy", pods_dir=pods_dir) as pod:
        assert pod.foo(1, 2) == 3


def test_repr_is_informative(toolbox):
    text = repr(toolbox)
    assert "toolbox" in text and f"pid {toolbox.pid}" in text


def test_the_example_client_runs(tmp_path):
    import subprocess
    import sys

    skip = shutil.ignore_patterns("venv", "__pycache__", ".venv.lock")
    for part in ("example", "pods"):
        shutil.copytree(REPO / part, tmp_path / part, ignore=skip)
    result = subprocess.run(
        [sys.executable, str(tmp_path / "example" / "client.py")],
        capture_output=True, text=True, cwd=tmp_path / "example", timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "foo(1, 2) = 3" in result.stdout
    assert "foo_in_module_test() = foo_in_module_test" in result.stdout
    assert "after unload, 'foo' in globals(): False" in result.stdout


def test_the_client_never_imports_pod_py(pods_dir):
    import sys

    marker = pods_dir / "imports.log"
    write_pod(
        pods_dir,
        "sideeffect",
        f"""
        import os
        with open({str(marker)!r}, "a") as log:
            log.write(f"imported in {{os.getpid()}}\\n")

        def where():
            return os.getpid()
        """,
    )
    with PodLoader("sideeffect", pods_dir=pods_dir) as pod:
        lines = marker.read_text().splitlines()
        assert lines == [f"imported in {pod.where()}"]
        assert pod.where() != os.getpid()
    assert "pod" not in sys.modules


def test_unload_is_a_clean_shutdown_that_runs_atexit_handlers(pods_dir):
    marker = pods_dir / "atexit.log"
    write_pod(
        pods_dir,
        "tidy",
        f"""
        import atexit

        def _goodbye():
            with open({str(marker)!r}, "w") as log:
                log.write("clean exit")

        atexit.register(_goodbye)

        def hello():
            return "hello"
        """,
    )
    loader = PodLoader("tidy", pods_dir=pods_dir).load_pod()
    assert loader.hello() == "hello"
    assert not marker.exists()
    loader.unload_pod()
    assert marker.read_text() == "clean exit"


def test_infinite_and_huge_timeouts_mean_no_practical_limit(_toolbox_built):
    loader = PodLoader("toolbox", pods_dir=_toolbox_built, timeout=float("inf"))
    assert loader.timeout is None
    with pytest.raises(ValueError):
        PodLoader("toolbox", pods_dir=_toolbox_built, timeout=float("nan"))
    loader.timeout = 1e10
    with loader:
        assert loader.sleep(0.1) == 0.1


def test_a_reload_that_fails_on_pod_toml_also_leaves_the_pod_unloaded(pods_dir):
    from pypods import PodConfigError

    folder = write_pod(pods_dir, "retoml", "def ok():\n    return 'ok'\n")
    namespace: dict = {}
    loader = PodLoader("retoml", namespace, pods_dir=pods_dir).load_pod()
    pid = loader.pid
    (folder / "pod.toml").write_text("pyhton = '3.9'\n")
    with pytest.raises(PodConfigError):
        loader.load_pod()
    assert not loader.loaded and "ok" not in namespace
    assert wait_until(lambda: not pid_alive(pid))


def test_attribute_access_on_a_half_constructed_loader_does_not_recurse():
    loader = PodLoader.__new__(PodLoader)  # as if __init__ had raised
    with pytest.raises(AttributeError):
        loader.anything  # noqa: B018
