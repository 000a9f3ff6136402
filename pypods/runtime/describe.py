"""Which functions a pod serves, and how they are described to the client.

The client never imports ``pod.py`` (its dependencies live only in the pod's venv), so
everything it shows a user about a pod function (name, docstring, signature) comes
from here.
"""

from __future__ import annotations

import inspect
import types
from typing import Any, Callable

from . import codec
from .protocol import MAX_DEFAULT_REPR

#: Modules whose callables are typing constructs (``Optional``, ``List``...), not
#: functions; ``from typing import List`` in pod.py must not serve ``List``.
_TYPING_MODULES = frozenset({"typing", "typing_extensions"})


class ServedNamesError(Exception):
    """pod.py's ``__all__`` names something that cannot be served."""


def served_functions(module: types.ModuleType) -> dict[str, Callable[..., Any]]:
    """Return the functions ``module`` serves, by the name they are served under.

    With ``__all__``, exactly the names it lists (each must be callable). Without it,
    every public (no leading underscore) global that is a function: anything callable
    except classes, modules and typing constructs, so functions imported into pod.py,
    builtins and decorated callables (``functools.partial``, ``lru_cache``...) count.

    Raises:
        ServedNamesError: ``__all__`` is not a sequence of str, or lists a name that
            is missing or not callable.
    """
    namespace = vars(module)
    exported = namespace.get("__all__")
    if exported is None:
        return {
            name: obj
            for name, obj in namespace.items()
            if not name.startswith("_") and _is_function(obj)
        }
    if isinstance(exported, str) or not all(isinstance(n, str) for n in exported):
        raise ServedNamesError("pod.py's __all__ must be a list of names (str)")
    served = {}
    for name in exported:
        if name not in namespace:
            raise ServedNamesError(f"pod.py's __all__ lists {name!r}, which pod.py does not define")
        obj = namespace[name]
        if not callable(obj):
            raise ServedNamesError(
                f"pod.py's __all__ lists {name!r}, which is a {type(obj).__name__}, not a "
                "function: only functions can be served"
            )
        served[name] = obj
    return served


def _is_function(obj: Any) -> bool:
    try:
        return (
            callable(obj)
            and not isinstance(obj, (type, types.ModuleType))
            and type(obj).__module__ not in _TYPING_MODULES
        )
    except Exception:  # an object that fails even these checks is not served
        return False


def describe_function(name: str, fn: Callable[..., Any]) -> dict[str, Any]:
    """Describe one served function for the client (see protocol.py, describe reply).

    Never raises: a callable whose attributes or signature fail to read (a lazy
    proxy, say) is described by its name alone, and still served.
    """
    try:
        return _describe(name, fn)
    except Exception:
        return {"name": name, "func_name": name, "qualname": name, "module": None,
                "doc": None, "signature": None}  # fmt: skip


def _describe(name: str, fn: Callable[..., Any]) -> dict[str, Any]:
    doc = getattr(fn, "__doc__", None)
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    func_name = getattr(fn, "__name__", None)
    # Exactly str, not a subclass: BSON and the client must see plain text.
    return {
        "name": name,
        "func_name": func_name if type(func_name) is str else name,
        "qualname": qualname if type(qualname) is str else name,
        "module": module if type(module) is str else None,
        "doc": doc if type(doc) is str else None,
        "signature": describe_signature(fn),
    }


def describe_signature(fn: Callable[..., Any]) -> dict[str, Any] | None:
    """Describe ``fn``'s signature, or return None when inspect cannot read one."""
    try:
        sig = inspect.signature(fn)
    except Exception:  # TypeError/ValueError for builtins; anything from odd objects
        return None
    params = []
    for p in sig.parameters.values():
        entry: dict[str, Any] = {"name": p.name, "kind": int(p.kind)}
        if p.default is not p.empty:
            try:
                entry["default"] = codec.encode(p.default, careful=True)
            except (TypeError, ValueError):
                entry["default_repr"] = _short_repr(p.default)
        if p.annotation is not p.empty:
            entry["annotation"] = annotation_text(p.annotation)
        params.append(entry)
    described: dict[str, Any] = {"parameters": params}
    if sig.return_annotation is not sig.empty:
        described["return_annotation"] = annotation_text(sig.return_annotation)
    return described


def annotation_text(annotation: Any) -> str:
    """Render an annotation as ``inspect`` shows it in the pod (``int``, ``'list[str]'``)."""
    try:
        return inspect.formatannotation(annotation)
    except Exception:  # a hostile __repr__ must not break describe
        return "<unprintable annotation>"


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__} object>"
    if len(text) > MAX_DEFAULT_REPR:
        text = text[: MAX_DEFAULT_REPR - 3] + "..."
    return text
