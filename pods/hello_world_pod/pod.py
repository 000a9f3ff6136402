"""The hello_world pod: the flow of the original PyPods README.

This file runs in the pod's own venv. Every public function defined or imported
here is served to the program that loads the pod.
"""

from pods.hello_world_pod.module_test import foo_in_module_test  # noqa: F401 - served


def foo(x, y):
    """Add two numbers, inside the pod."""
    return x + y


def whoami():
    """Report which interpreter and venv run this pod."""
    import sys

    return {"python": sys.version.split()[0], "prefix": sys.prefix}


# Pods written for the original PyPods end with this block. It is never run: PyPods
# imports pod.py as a module, so it can stay, and nothing here needs PyPods installed.
if __name__ == "__main__":
    from pypods.pods import PodListener  # noqa: F401
