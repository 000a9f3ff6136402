"""``PodLoader``: the public face of a pod.

It finds (or creates) the pod folder, has the venv built, starts the pod process,
and injects a proxy for every function the pod serves into the caller's namespace.
"""

from __future__ import annotations

import functools
import math
import os
import threading
import weakref
from collections.abc import MutableMapping
from pathlib import Path
from threading import TIMEOUT_MAX
from typing import Any, Callable, Mapping

from . import memory
from .client import CANCEL_GRACE, NotSent, PodProcess
from .config import read_config
from .env import RUNTIME_PACKAGE, PodEnvironment
from .errors import (
    NoSuchFunctionError,
    PodConfigError,
    PodError,
    PodNotLoadedError,
    PodProtocolError,
    PodTimeoutError,
)
from .folder import PodFolder, default_pods_dir, validate_pod_name
from .proxies import make_proxy

_live_loaders: weakref.WeakSet[PodLoader] = weakref.WeakSet()


class _ProcessSlot:
    """Holds a loader's current pod process; shared with the loader's finalizer."""

    __slots__ = ("process",)

    def __init__(self) -> None:
        self.process: PodProcess | None = None


def _close_slot(slot: _ProcessSlot) -> None:
    """Finalizer: a loader that is garbage-collected while loaded stops its pod.

    Garbage collection runs in whatever thread triggers it, so this must not block:
    the pod is closed in a helper thread.
    """
    process, slot.process = slot.process, None
    if process is not None:
        process.close_soon()


class PodLoader:
    """Loads one pod and gives access to its functions.

    Args:
        pod_name: the pod's name: a Python identifier, and the name of its folder.
        namespace: where to inject the pod's functions, typically ``globals()``;
            None to inject nowhere (use ``loader.foo(...)`` or ``loader.call``).
        pods_dir: the folder holding pods. Default: ``$PYPODS_DIR`` when set, else
            ``./pods`` under the current working directory (read once, here).
        python: the interpreter the pod's venv is built from: None for the one
            running this program, a version such as ``"3.9"`` (the newest installed
            3.9.x), or the path of an interpreter. Wins over ``python`` in pod.toml.
        timeout: default limit, in seconds, for each call; None for no limit. A call
            that runs past it raises ``PodTimeoutError`` and the pod is restarted.
        env: extra environment variables for the pod process.
        pickle: let values of types PyPods does not carry natively cross as pickles
            (cloudpickle when both sides have it). Off by default: unpickling runs
            code chosen by the other side, and pickles tie both sides to compatible
            versions of every pickled class. Functions are never sent as arguments.
        max_message_size: the most bytes one message (a call's arguments, or a
            result) may take, in both directions; larger ones are refused before
            they are sent, and a peer announcing more is treated as broken. Default:
            this machine's physical memory.
        max_memory: the most resident memory, in bytes, the pod process may use
            (Linux). Over it, the running call fails with a ``RemoteError`` that is
            also a ``MemoryError``; a pod that stays over it for a second, or grows
            past 1.25 times it, is killed (``PodCrashedError`` naming the limit) and
            restarted by the next call. None: no limit.
        cancel_grace: seconds a call interrupted by Ctrl-C (KeyboardInterrupt in the
            waiting thread) may take to stop in the pod before the pod is restarted.
            The caller gets its KeyboardInterrupt at once either way.
        start_timeout: seconds a pod process may take to start (import pod.py) and
            answer, on each start and restart; past it, the process is stopped and
            ``PodStartError`` raised. None (the default): no limit, since importing
            large libraries can take long. Building the venv is not included.

    Raises:
        ValueError: ``pod_name`` is not a valid pod name, or ``timeout`` or
            ``max_message_size`` is not positive.
        TypeError: ``namespace`` or ``env`` has the wrong type.

    Example::

        pl = PodLoader("hello_world_pod", globals())
        pl.load_pod()
        foo(1, 2)         # runs in the pod
        pl.unload_pod()
    """

    def __init__(
        self,
        pod_name: str,
        namespace: MutableMapping[str, Any] | None = None,
        *,
        pods_dir: str | os.PathLike[str] | None = None,
        python: str | os.PathLike[str] | None = None,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        pickle: bool = False,
        max_message_size: int | None = None,
        max_memory: int | None = None,
        cancel_grace: float = CANCEL_GRACE,
        start_timeout: float | None = None,
    ) -> None:
        validate_pod_name(pod_name)
        if not isinstance(pickle, bool):
            raise TypeError(f"pickle must be True or False, not {type(pickle).__name__}")
        if namespace is not None and not isinstance(namespace, MutableMapping):
            raise TypeError(
                f"namespace must be a dict such as globals(), not {type(namespace).__name__}"
            )
        if python is not None and not isinstance(python, (str, os.PathLike)):
            raise TypeError(
                f"python must be a version string or a path, not {type(python).__name__}"
            )
        if env is not None:
            if not isinstance(env, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in env.items()
            ):
                raise TypeError("env must be a mapping of str to str")
            env = dict(env)
        self.name = pod_name
        self.namespace = namespace
        self.folder = PodFolder(default_pods_dir() if pods_dir is None else pods_dir, pod_name)
        self.python = python
        self.timeout = timeout
        self.env = env
        self.pickle = pickle
        self.max_message_size = _check_message_size(max_message_size)
        self.max_memory = _check_max_memory(max_memory)
        self.cancel_grace = _check_grace(cancel_grace)
        self.start_timeout = _check_timeout(start_timeout, "start_timeout")
        self._lock = threading.RLock()
        self._slot = _ProcessSlot()
        # At exit, client.py shuts every pod down at once; this is for loaders dropped
        # before that.
        weakref.finalize(self, _close_slot, self._slot).atexit = False
        self._environment: PodEnvironment | None = None
        self._proxies: dict[str, Callable[..., Any]] = {}
        self._injected: dict[str, Callable[..., Any]] = {}
        self._shadowed: dict[str, Any] = {}
        _live_loaders.add(self)

    # -- options and paths -------------------------------------------------------------

    @property
    def timeout(self) -> float | None:
        """Default limit in seconds for each call (None: no limit); may be changed."""
        return self._timeout

    @timeout.setter
    def timeout(self, value: float | None) -> None:
        self._timeout = _check_timeout(value)

    @property
    def pods_dir(self) -> Path:
        return self.folder.pods_dir

    @property
    def pod_dir(self) -> Path:
        return self.folder.path

    # -- loading ---------------------------------------------------------------------

    def load_pod(self) -> PodLoader:
        """Create the pod if needed, bring its venv in line, start it, inject its functions.

        Calling it again restarts the pod: the running process is stopped first (its
        state is lost, and whatever it holds, memory for a model, a port, a lock, is
        free for the new one), then the pod is loaded afresh and what it serves now
        is injected. If that fails, the error is raised and the pod is left unloaded.

        Returns:
            The loader itself.

        Raises:
            PodInstallError: the venv could not be built.
            PodStartError: the pod process could not start (pod.py raised...).
            PodConfigError: the pod folder or its pod.toml is invalid.
        """
        if os.name == "nt":
            raise PodError("PyPods runs pods on Linux and macOS; on Windows, use it inside WSL")
        with self._lock:
            self.unload_pod()
            self.folder.ensure_exists()
            config = read_config(self.folder.config_file)
            environment = PodEnvironment(
                self.folder,
                python=self.python if self.python is not None else config.python,
                options=config.install,
            )
            environment.ensure_ready()
            process = self._start(environment)
            try:
                proxies = self._make_proxies(process)
            except BaseException:
                process.close()
                raise
            # Proxies first: a concurrent pl.foo never sees a process without them.
            self._proxies, self._environment = proxies, environment
            self._slot.process = process
            self._inject()
        return self

    def unload_pod(self) -> None:
        """Stop the pod and remove exactly the names that were injected.

        A name is removed only while it is still bound to the proxy that was injected;
        what the injection shadowed is put back. Safe to call when not loaded.
        """
        with self._lock:
            self._uninject()
            process, self._slot.process = self._slot.process, None
            self._proxies = {}
        if process is not None:
            process.close()

    @property
    def loaded(self) -> bool:
        """True between ``load_pod()`` and ``unload_pod()``."""
        return self._slot.process is not None

    @property
    def functions(self) -> Mapping[str, Callable[..., Any]]:
        """The proxies of the functions the pod serves, by name (a copy)."""
        return dict(self._proxies)

    @property
    def pid(self) -> int | None:
        """The pod process's id, or None when not loaded."""
        process = self._slot.process
        return process.pid if process is not None else None

    # -- calling ---------------------------------------------------------------------

    def call(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call the pod function ``name`` with these arguments.

        Raises:
            NoSuchFunctionError: the pod serves no function ``name``.
            PodNotLoadedError: the pod is not loaded.
        """
        proxy = self._proxies.get(name)
        if proxy is None and self._wait_for_load():
            proxy = self._proxies.get(name)
        if proxy is None:
            self._require_loaded()
            raise NoSuchFunctionError(self.name, name, list(self._proxies))
        return proxy(*args, **kwargs)

    def _invoke(self, function: str, args: tuple, kwargs: dict) -> Any:
        process = self._slot.process
        while True:
            if process is None:
                if not self._wait_for_load():
                    raise PodTimeoutError.not_started(
                        self.name, function, self._timeout, "load_pod() in another thread"
                    )
                process = self._slot.process
                if process is None:
                    raise self._not_loaded()
                continue
            if process.finished:
                process = self._restart(process, function)
                continue
            try:
                return process.invoke(function, args, kwargs, self._timeout)
            except NotSent:
                # Another caller saw this process end and reported it; this call was
                # never sent, so it runs on a fresh process instead.
                process = self._slot.process

    def _wait_for_load(self) -> bool:
        """Wait until no load_pod() or unload_pod() runs in another thread, at most the
        call timeout; False if that time ran out."""
        if not self._lock_within_timeout():
            return False
        self._lock.release()
        return True

    def _lock_within_timeout(self) -> bool:
        timeout = self._timeout
        return self._lock.acquire(timeout=-1 if timeout is None else min(timeout, TIMEOUT_MAX))

    def _restart(self, finished: PodProcess, function: str) -> PodProcess | None:
        """Start a new process in place of a finished one (once, whoever asks first).

        Waiting for another thread's restart counts against the call's timeout; a
        restart this call makes itself is limited by ``start_timeout`` instead.
        """
        if not self._lock_within_timeout():
            raise PodTimeoutError.not_started(
                self.name, function, self._timeout, "the pod to be restarted by another thread"
            )
        try:
            if self._slot.process is finished:
                assert self._environment is not None  # set by load_pod() with the process
                self._slot.process = self._start(self._environment)
            return self._slot.process
        finally:
            self._lock.release()

    def _start(self, environment: PodEnvironment) -> PodProcess:
        return PodProcess.start(
            self.name,
            python=str(environment.python),
            runtime_module=RUNTIME_PACKAGE,
            pod_dir=str(self.folder.path),
            pods_dir=str(self.folder.pods_dir),
            env=environment.process_env(self.env),
            pickle=self.pickle,
            max_message_size=self.max_message_size,
            max_memory=self.max_memory,
            cancel_grace=self.cancel_grace,
            start_timeout=self.start_timeout,
        )

    def _require_loaded(self) -> None:
        if self._slot.process is None:
            raise self._not_loaded()

    def _not_loaded(self) -> PodNotLoadedError:
        return PodNotLoadedError(f"pod {self.name!r} is not loaded: call load_pod() first")

    def _make_proxies(self, process: PodProcess) -> dict[str, Callable[..., Any]]:
        proxies = {}
        for description in process.description["functions"]:
            try:
                name = description["name"]
                proxies[name] = make_proxy(description, self._bind(name))
            except (KeyError, TypeError, ValueError) as exc:
                raise PodProtocolError(
                    f"pod {self.name!r} described a function in a form this client cannot "
                    f"read ({exc}): is the pod runtime from another PyPods version?"
                ) from None
        return proxies

    def _bind(self, function: str) -> Callable[[tuple, dict], Any]:
        # A partial, not a closure: one Python frame less on every call.
        return functools.partial(self._invoke, function)

    # -- namespace injection -----------------------------------------------------------

    def _inject(self) -> None:
        namespace = self.namespace
        if namespace is None:
            return
        for name, proxy in self._proxies.items():
            if name in namespace:
                self._shadowed[name] = namespace[name]
            namespace[name] = proxy
            self._injected[name] = proxy

    def _uninject(self) -> None:
        namespace = self.namespace
        if namespace is not None:
            for name, proxy in self._injected.items():
                if namespace.get(name) is proxy:
                    if name in self._shadowed:
                        namespace[name] = self._shadowed[name]
                    else:
                        del namespace[name]
        self._injected = {}
        self._shadowed = {}

    # -- conveniences ------------------------------------------------------------------

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        proxies = self.__dict__.get("_proxies", {})
        if name in proxies:
            return proxies[name]
        if "_lock" in self.__dict__ and self._wait_for_load():  # never recurse
            proxies = self._proxies
            if name in proxies:
                return proxies[name]
        pod = self.__dict__.get("name", "?")
        slot = self.__dict__.get("_slot")
        if slot is None or slot.process is None:
            raise NoSuchFunctionError(pod, name, (), not_loaded=True)
        raise NoSuchFunctionError(pod, name, list(proxies))

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._proxies))

    def __enter__(self) -> PodLoader:
        if not self.loaded:
            self.load_pod()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.unload_pod()

    def __repr__(self) -> str:
        process = self._slot.process
        if process is None:
            state = "not loaded"
        else:
            state = f"loaded, pid {process.pid}, {len(self._proxies)} functions"
        return f"<PodLoader {self.name!r} at {str(self.folder.path)!r} ({state})>"


def _after_fork_in_child() -> None:
    for loader in list(_live_loaders):
        loader._lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


#: The smallest ``max_message_size`` accepted: room for any describe reply.
MIN_MESSAGE_SIZE = 1 << 16


def _check_message_size(size: int | None) -> int:
    if size is None:
        return default_max_message_size()
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"max_message_size must be a number of bytes, not {type(size).__name__}")
    if size < MIN_MESSAGE_SIZE:
        raise ValueError(f"max_message_size must be at least {MIN_MESSAGE_SIZE} bytes, not {size}")
    return size


def _check_max_memory(limit: int | None) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"max_memory must be a number of bytes or None, not {type(limit).__name__}")
    if limit < MIN_MEMORY:
        raise ValueError(
            f"max_memory must be at least {MIN_MEMORY} bytes (an interpreter alone needs "
            f"about 10 MB), not {limit}"
        )
    if not memory.supported():
        raise PodConfigError(
            "max_memory needs a way to read a process's resident memory (Linux's /proc), "
            "which this system lacks; leave max_memory unset here"
        )
    return limit


def _check_grace(grace: float) -> float:
    if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not grace >= 0:
        raise ValueError(f"cancel_grace must be a number of seconds >= 0, not {grace!r}")
    return float(grace)


#: The smallest ``max_memory`` accepted.
MIN_MEMORY = 32 << 20


def default_max_message_size() -> int:
    """This machine's physical memory: no message larger than that can be held anyway."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 1 << 40


def _check_timeout(timeout: float | None, name: str = "timeout") -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, not {type(timeout).__name__}")
    if not timeout > 0:  # also refuses nan
        raise ValueError(f"{name} must be a positive number of seconds or None, not {timeout!r}")
    try:
        seconds = float(timeout)
    except OverflowError:  # an int beyond any float: no practical limit either
        return None
    return None if math.isinf(seconds) else seconds
