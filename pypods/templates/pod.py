"""The {name} pod.

This file runs in the pod's own virtual environment (venv/, built from
requirements.txt), never in the program that loads it. Every public function
defined or imported here (a name without a leading underscore) is served to that
program; define __all__ to choose exactly which.

Arguments and results cross between the two processes by value: None, bool, int,
float, str, bytes, list, tuple, dict and datetime. Module-level state lives as
long as the pod process does.
"""

# Write your functions below. For example:
#
# def add(x, y):
#     """Add two numbers, inside the pod."""
#     return x + y
