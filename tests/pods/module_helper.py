"""A module beside the toolbox pod's pod.py, imported with a plain import."""

helper_value = 42
