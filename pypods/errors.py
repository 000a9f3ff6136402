"""Every error PyPods raises, in one hierarchy rooted at ``PodError``.

    PodError
    ├── RemoteError              pod code raised (also an instance of the builtin it mirrors)
    ├── NoSuchFunctionError      the pod serves no such name (also an AttributeError)
    ├── PodCrashedError          the pod process died
    ├── PodTimeoutError          a call ran past its timeout (also a TimeoutError)
    ├── PodStartError            the pod process could not start (pod.py failed to import...)
    ├── PodProtocolError         the pod sent something this client cannot read
    ├── PodNotLoadedError        the loader has no pod loaded
    ├── PodConfigError           a pod folder or pod.toml is invalid (also a ValueError)
    └── PodInstallError          building the pod's venv failed
        └── PythonNotFoundError  no interpreter matches the requested Python

Values that cannot cross the boundary raise ``TypeError`` (see ``pypods.runtime.codec``).
"""

from __future__ import annotations

import builtins
from typing import Any, Sequence


class PodError(Exception):
    """Base class of every error PyPods raises about a pod."""


class RemoteTraceback(Exception):
    """Carries the pod's traceback text, attached as a ``RemoteError``'s ``__cause__``.

    Python prints a cause before the exception itself, so an uncaught ``RemoteError``
    shows the pod's own frames, then the client's.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f"\n\nTraceback in the pod:\n{self.text.rstrip()}"


class RemoteError(PodError):
    """Pod code raised an exception.

    When the remote class is, or derives from, a builtin exception (``ValueError``,
    ``KeyError``...), the raised object is also an instance of that builtin, so
    ``except ValueError:`` works across the boundary. ``str(error)`` is the remote
    message.

    Attributes:
        remote_type: qualified name of the exception class raised in the pod.
        remote_traceback: the pod's formatted traceback, showing the pod's own frames.
        pod: name of the pod.
        function: name of the function that raised, or None at start-up.
    """

    def __init__(
        self,
        message: str,
        *,
        remote_type: str,
        remote_traceback: str = "",
        pod: str | None = None,
        function: str | None = None,
    ) -> None:
        # BaseException.__init__ directly: a mirrored builtin's own __init__ may demand
        # other arguments (UnicodeDecodeError takes five).
        BaseException.__init__(self, message)
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback
        self.pod = pod
        self.function = function

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __reduce__(self) -> tuple:
        state = {
            "remote_traceback": self.remote_traceback,
            "pod": self.pod,
            "function": self.function,
        }
        return (
            _rebuild_remote_error,
            (str(self), self.remote_type, tuple(_mro_names(self)), state),
        )


class NoSuchFunctionError(PodError, AttributeError):
    """The pod serves no function of that name."""

    def __init__(
        self, pod: str, function: str, served: Sequence[str] = (), *, not_loaded: bool = False
    ) -> None:
        if not_loaded:
            message = (
                f"pod {pod!r} is not loaded, so it has no function {function!r}: "
                "call load_pod() first"
            )
        else:
            hint = f"it serves: {', '.join(sorted(served))}" if served else "it serves no functions"
            message = (
                f"pod {pod!r} has no function {function!r} ({hint}). Functions are the "
                "public callables in pod.py's global namespace, or the names in its __all__."
            )
        super().__init__(message)
        self.pod = pod
        self.function = function
        self.name = function


class PodCrashedError(PodError):
    """The pod process died, during a call or between calls.

    The message has the exit status and the last lines the pod wrote to stderr. The
    next call starts a fresh process (module state is lost).

    Attributes:
        returncode: the process's exit code, negative for a signal, None if unknown.
        stderr_tail: the last lines the pod wrote to stderr.
    """

    def __init__(
        self, message: str, *, pod: str, returncode: int | None, stderr_tail: Sequence[str] = ()
    ) -> None:
        super().__init__(message)
        self.pod = pod
        self.returncode = returncode
        self.stderr_tail = list(stderr_tail)


class PodTimeoutError(PodError, TimeoutError):
    """A call ran past its timeout.

    A call that had started stopped the pod (its state is unknown); the next call
    starts it afresh. A call whose time ran out while it still waited (see
    ``not_started``) left the pod alone.
    """

    def __init__(self, message: str, *, pod: str, function: str, timeout: float) -> None:
        super().__init__(message)
        self.pod = pod
        self.function = function
        self.timeout = timeout

    @classmethod
    def not_started(
        cls, pod: str, function: str, timeout: float | None, waiting_for: str
    ) -> PodTimeoutError:
        """The error of a call whose time ran out while it waited for ``waiting_for``."""
        return cls(
            f"call to {function}() in pod {pod!r} timed out after {timeout or 0.0:g}s "
            f"while waiting for {waiting_for} (the call was not started)",
            pod=pod,
            function=function,
            timeout=timeout or 0.0,
        )


class PodStartError(PodError):
    """The pod process could not start: pod.py raised on import, or the process died.

    Attributes:
        remote_type: the exception class raised while importing pod.py, if any.
        remote_traceback: its traceback in the pod, if any.
        returncode: the process's exit status when it died, else None.
        stderr_tail: the last lines the pod wrote to stderr.
    """

    def __init__(
        self,
        message: str,
        *,
        pod: str,
        remote_type: str | None = None,
        remote_traceback: str = "",
        returncode: int | None = None,
        stderr_tail: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.pod = pod
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback
        self.returncode = returncode
        self.stderr_tail = list(stderr_tail)


class PodProtocolError(PodError):
    """The pod sent something this client cannot read.

    When the byte stream itself is broken the pod was stopped (the next call starts
    a fresh one); a single undecodable value only fails the call it answers.
    """


class PodNotLoadedError(PodError):
    """The pod is not loaded: call ``load_pod()`` first."""


class PodConfigError(PodError, ValueError):
    """A pod folder, its pod.toml, or a loader option is invalid."""


class PodInstallError(PodError):
    """Building the pod's venv or installing its requirements failed.

    Nothing half-built is kept as ready: fix the cause and call ``load_pod()`` again.

    Attributes:
        pod: name of the pod.
        requirement: the requirement that failed, when the installer output names one.
        output: the tail of the installer's output.
    """

    def __init__(
        self, message: str, *, pod: str, requirement: str | None = None, output: str = ""
    ) -> None:
        super().__init__(message)
        self.pod = pod
        self.requirement = requirement
        self.output = output


class PythonNotFoundError(PodInstallError):
    """No installed interpreter matches the Python version a pod asks for."""


# -- rebuilding remote exceptions ----------------------------------------------------

_MIRROR_CLASSES: dict[type, type] = {}

#: Builtin exceptions that are never mirrored: their constructors need arguments a
#: message alone cannot provide.
_NOT_MIRRORED = frozenset({"BaseExceptionGroup", "ExceptionGroup"})


def _builtin_exception(name: str) -> type | None:
    cls = getattr(builtins, name, None)
    if (
        isinstance(cls, type)
        and issubclass(cls, Exception)
        and cls.__module__ == "builtins"
        and name not in _NOT_MIRRORED
    ):
        return cls
    return None


def remote_error_class(mro: Sequence[str]) -> type[RemoteError]:
    """Return the RemoteError class for a remote exception with these class names.

    The first builtin ``Exception`` subclass in ``mro`` (most derived first) is mixed
    in; ``SystemExit``, ``KeyboardInterrupt`` and other ``BaseException``-only classes
    never are.
    """
    for name in mro:
        base = _builtin_exception(name)
        if base is not None:
            break
    else:
        return RemoteError
    cls = _MIRROR_CLASSES.get(base)
    if cls is None:
        cls = type(
            f"Remote{base.__name__}",
            (RemoteError, base),
            {"__module__": __name__, "__doc__": f"A {base.__name__} raised in a pod."},
        )
        _MIRROR_CLASSES[base] = cls
    return cls


def _mro_names(error: RemoteError) -> list[str]:
    return [c.__name__ for c in type(error).__mro__ if c.__module__ == "builtins"]


def _rebuild_remote_error(
    message: str, remote_type: str, mro: Sequence[str], state: dict[str, Any]
) -> RemoteError:
    error = remote_error_class(mro)(message, remote_type=remote_type)
    error.__dict__.update(state)
    return error


def make_remote_error(
    *,
    message: str,
    remote_type: str,
    mro: Sequence[str],
    traceback: str,
    pod: str,
    function: str | None,
) -> RemoteError:
    """Build the exception a client raises for an exception raised in a pod."""
    error = remote_error_class(mro)(
        message, remote_type=remote_type, remote_traceback=traceback, pod=pod, function=function
    )
    if traceback:
        error.__cause__ = RemoteTraceback(traceback)
    return error


__all__ = [
    "NoSuchFunctionError",
    "PodConfigError",
    "PodCrashedError",
    "PodError",
    "PodInstallError",
    "PodNotLoadedError",
    "PodProtocolError",
    "PodStartError",
    "PodTimeoutError",
    "PythonNotFoundError",
    "RemoteError",
    "RemoteTraceback",
]
