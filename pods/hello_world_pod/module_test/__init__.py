"""A package inside the pod folder, imported by pod.py as in the original PyPods."""


def foo_in_module_test():
    return "foo_in_module_test"
