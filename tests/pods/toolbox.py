"""pod.py of the test suite's "toolbox" pod: one function per behaviour under test."""

import datetime
import os
import sys
import threading
import time

from module_helper import helper_value  # noqa: F401 - a plain relative-to-pod import

_calls = 0
_DEFAULT = object()


def add(x, y):
    """Add two values, inside the pod."""
    return x + y


def echo(value):
    return value


def echo_type(value):
    return type(value).__name__


def describe_args(*args, **kwargs):
    return {"args": list(args), "kwargs": kwargs}


def pick(key, **kwargs):
    return kwargs[key]


def with_defaults(a, b=2, *, c=3, d=_DEFAULT):
    """Uses its own defaults, one of which cannot cross."""
    return [a, b, c, "default" if d is _DEFAULT else d]


def odd_names(self, name, func_name=None, *, fn="fn", args=()):
    return [self, name, func_name, fn, args]


def positional_only(a, b, /, c=0):
    return a + b + c


def annotated(x: int, y: "list[str]" = None) -> dict:  # noqa: RUF013
    return {}


def counter():
    """Module state lives as long as the pod process."""
    global _calls
    _calls += 1
    return _calls


def get_pid():
    return os.getpid()


def python_info():
    return {"version": list(sys.version_info[:3]), "prefix": sys.prefix, "path": sys.path}


def now():
    return datetime.datetime(2024, 5, 6, 7, 8, 9, 123456)


def raise_value_error(message="bad value"):
    raise ValueError(message)


def raise_key_error(key):
    return {}[key]


def divide(a, b):
    return a / b


class PodSpecificError(ValueError):
    pass


def raise_custom():
    raise PodSpecificError("custom failure")


def raise_file_not_found():
    with open("/definitely/not/here.txt"):
        pass


def nest(levels):
    value = []
    for _ in range(levels):
        value = [value]
    return value


def nest_dicts(levels, beside=None):
    """Dicts nested ``levels`` deep; with ``beside``, in a pair with it."""
    value = {}
    for _ in range(levels - 1):
        value = {1: value}  # int keys: three BSON levels each
    return value if beside is None else (value, beside)


def return_unsendable():
    return {"fine": 1, "bad": [1, {2, iter([])}]}


def return_self_referencing():
    value = []
    value.append(value)
    return value


def shout(text):
    print(f"stdout: {text}")
    print(f"stderr: {text}", file=sys.stderr)
    return len(text)


def write_fd1(text):
    os.write(1, text.encode())
    return True


def c_printf(text):
    import ctypes

    libc = ctypes.CDLL(None)
    libc.printf(b"%s", text.encode())  # no newline: only unbuffered C stdout shows it
    return True


def read_input():
    return input("prompt> ")


def print_lots(count):
    line = "x" * 99
    for _ in range(count):
        print(line)
    return count


def print_later(text, delay):
    def later():
        time.sleep(delay)
        print(text, flush=True)

    threading.Thread(target=later).start()
    return True


def run_child_echo(text):
    import subprocess

    subprocess.run(["echo", text], check=True)
    return True


def sleep(seconds):
    time.sleep(seconds)
    return seconds


def exit_process(code):
    sys.stderr.write(f"about to exit with {code}\n")
    sys.stderr.flush()
    os._exit(code)


def sys_exit(code):
    sys.exit(code)


def segfault():
    import ctypes

    ctypes.string_at(0)


def kill_self_later(delay):
    def later():
        time.sleep(delay)
        os._exit(7)

    threading.Thread(target=later, daemon=True).start()
    return True


def spawn_sleeper(seconds):
    """Start a child process that outlives this call (and holds the pod's pipes)."""
    import subprocess

    child = subprocess.Popen(["sleep", str(seconds)], close_fds=False)
    return child.pid


def raise_keyboard_interrupt():
    raise KeyboardInterrupt


def _private_helper():
    return "never served"


class NotAFunction:
    pass
