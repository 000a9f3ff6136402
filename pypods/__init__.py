"""PyPods: call Python functions that live in their own virtual environment.

Each pod is a folder with a ``pod.py``, a ``requirements.txt`` and its own venv; its
functions run in one long-lived process of that venv's interpreter, and are called
from the client through proxies that look and check arguments like the real thing::

    from pypods import PodLoader

    pl = PodLoader("hello_world_pod", globals())
    pl.load_pod()
    foo(1, 2)        # runs inside the pod
    pl.unload_pod()
"""

from .errors import (
    NoSuchFunctionError,
    PodConfigError,
    PodCrashedError,
    PodError,
    PodInstallError,
    PodNotLoadedError,
    PodProtocolError,
    PodStartError,
    PodTimeoutError,
    PythonNotFoundError,
    RemoteError,
)
from .loader import PodLoader

__version__ = "0.3.0"

__all__ = [
    "NoSuchFunctionError",
    "PodConfigError",
    "PodCrashedError",
    "PodError",
    "PodInstallError",
    "PodLoader",
    "PodNotLoadedError",
    "PodProtocolError",
    "PodStartError",
    "PodTimeoutError",
    "PythonNotFoundError",
    "RemoteError",
    "__version__",
]
