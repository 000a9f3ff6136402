"""The original PyPods import path: ``from pypods.pods import PodLoader`` keeps working."""

from . import errors
from .errors import *  # noqa: F403 - the same names as ``pypods``
from .loader import PodLoader

__all__ = ["PodLoader", *errors.__all__]
