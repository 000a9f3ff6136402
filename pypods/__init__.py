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

from . import errors
from .errors import *  # noqa: F403 - the whole error hierarchy is public
from .loader import PodLoader

__version__ = "0.3.0"

__all__ = ["PodLoader", "__version__", *errors.__all__]
