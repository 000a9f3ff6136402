"""Client-side stand-ins for pod functions, with the pod function's real signature.

A proxy is a generated Python function whose parameter list is the pod function's, so
the interpreter itself checks every call: wrong arguments raise ``TypeError`` in the
client, at no cost and without a round trip. Parameters with defaults receive a
private sentinel, and only the arguments the caller actually passed are sent: the pod
applies its own defaults, which therefore never cross the boundary.

``inspect.signature(proxy)`` (and so ``help()``) shows the pod's signature: defaults
the codec can carry as themselves, others as a placeholder showing the pod's repr.
"""

from __future__ import annotations

import inspect
import keyword
from typing import Any, Callable, Mapping

from .runtime import codec

_P = inspect.Parameter
_KINDS = {
    int(kind): kind
    for kind in (
        _P.POSITIONAL_ONLY,
        _P.POSITIONAL_OR_KEYWORD,
        _P.VAR_POSITIONAL,
        _P.KEYWORD_ONLY,
        _P.VAR_KEYWORD,
    )
}

_POSITIONAL = (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD)

#: Forwards one call: ``invoke(args, kwargs)``.
Invoke = Callable[[tuple, dict], Any]


class _MissingType:
    """The default every proxy parameter gets: "the caller did not pass this"."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<not passed>"


MISSING = _MissingType()


class RemoteDefault:
    """Stands in, in a proxy's signature, for a default the codec cannot carry."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"<pod default: {self.text}>"


class RemoteAnnotation:
    """An annotation of the pod function, shown as the pod wrote it."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemoteAnnotation) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


def make_proxy(description: Mapping[str, Any], invoke: Invoke) -> Callable[..., Any]:
    """Build the proxy for one described pod function (see runtime/protocol.py).

    Raises:
        ValueError: the description is malformed.
    """
    signature = build_signature(description.get("signature"))
    name = description["name"]
    func_name = _str_or(description.get("func_name"), name)
    proxy = _compile(signature, invoke, func_name) if signature is not None else None
    if proxy is None:

        def proxy(*args: Any, **kwargs: Any) -> Any:
            return invoke(args, kwargs)

    proxy.__name__ = func_name
    proxy.__qualname__ = _str_or(description.get("qualname"), name)
    proxy.__module__ = _str_or(description.get("module"), "pod")
    proxy.__doc__ = description.get("doc") if isinstance(description.get("doc"), str) else None
    if signature is not None:
        proxy.__signature__ = signature  # type: ignore[attr-defined]
    return proxy


def build_signature(described: Any) -> inspect.Signature | None:
    """Rebuild an ``inspect.Signature`` from its description, or None if there is none.

    Raises:
        ValueError: the description is malformed, or is not a valid Python signature.
    """
    if described is None:
        return None
    if type(described) is not dict or type(described.get("parameters")) is not list:
        raise ValueError("malformed signature description")
    parameters = []
    for entry in described["parameters"]:
        name = entry.get("name")
        kind = _KINDS.get(entry.get("kind"))
        if (
            not isinstance(name, str)
            or not name.isidentifier()
            or keyword.iskeyword(name)
            or kind is None
        ):
            raise ValueError(f"malformed parameter description {entry!r}")
        default: Any = inspect.Parameter.empty
        if "default" in entry:
            default = codec.decode(entry["default"])
        elif "default_repr" in entry:
            default = RemoteDefault(str(entry["default_repr"]))
        annotation = (
            RemoteAnnotation(str(entry["annotation"]))
            if "annotation" in entry
            else inspect.Parameter.empty
        )
        parameters.append(inspect.Parameter(name, kind, default=default, annotation=annotation))
    returns = described.get("return_annotation")
    return inspect.Signature(
        parameters,
        return_annotation=RemoteAnnotation(str(returns))
        if returns is not None
        else inspect.Signature.empty,
    )


def pack_arguments(
    positional: tuple,
    names: tuple[str, ...],
    keyword_only_from: int,
    varargs: tuple,
    varkw: dict,
) -> tuple[tuple, dict]:
    """Turn a proxy's parameter values back into the arguments the caller passed.

    ``positional`` holds the values of the named parameters in order; those from
    index ``keyword_only_from`` on are keyword-only. A positional parameter after one
    that was not passed must have been passed by keyword, so it is sent by keyword.
    """
    args: list = []
    kwargs: dict = {}
    gap = False
    for index, (name, value) in enumerate(zip(names, positional)):
        if value is MISSING:
            gap = True
        elif index >= keyword_only_from or gap:
            kwargs[name] = value
        else:
            args.append(value)
    args.extend(varargs)
    kwargs.update(varkw)
    return tuple(args), kwargs


def _compile(
    signature: inspect.Signature, invoke: Invoke, func_name: str
) -> Callable[..., Any] | None:
    """Generate a function with ``signature``'s parameter list that forwards to ``invoke``.

    The generated ``def`` bears the pod function's name, so that argument errors read
    ``foo() missing 1 required positional argument`` on every Python version.
    """
    params = list(signature.parameters.values())
    taken = {p.name for p in params}
    helper = "_pypods_"
    while any(n.startswith(helper) for n in taken):
        helper += "_"
    invoke_name, missing_name, pack_name = helper + "invoke", helper + "missing", helper + "pack"

    source_params = []
    seen_keyword_only = False
    for index, p in enumerate(params):
        if p.kind is p.KEYWORD_ONLY and not seen_keyword_only:
            seen_keyword_only = True
            source_params.append("*")
        if p.kind is p.VAR_POSITIONAL:
            seen_keyword_only = True
            source_params.append(f"*{p.name}")
        elif p.kind is p.VAR_KEYWORD:
            source_params.append(f"**{p.name}")
        else:
            default = f"={missing_name}" if p.default is not p.empty else ""
            source_params.append(p.name + default)
        if p.kind is p.POSITIONAL_ONLY and (
            index + 1 == len(params) or params[index + 1].kind is not p.POSITIONAL_ONLY
        ):
            source_params.append("/")

    named = [p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    varargs = next((p.name for p in params if p.kind is p.VAR_POSITIONAL), None)
    varkw = next((p.name for p in params if p.kind is p.VAR_KEYWORD), None)
    if not any(p.default is not p.empty for p in named):
        positional = [p.name for p in named if p.kind in _POSITIONAL]
        keywords = [p.name for p in named if p.kind is p.KEYWORD_ONLY]
        args_src = (
            "(" + "".join(f"{n}, " for n in positional) + (f"*{varargs}" if varargs else "") + ")"
        )
        kwargs_src = (
            "{" + "".join(f"{n!r}: {n}, " for n in keywords) + (f"**{varkw}" if varkw else "") + "}"
        )
        body = f"return {invoke_name}({args_src}, {kwargs_src})"
    else:
        keyword_only_from = sum(1 for p in named if p.kind in _POSITIONAL)
        names = tuple(p.name for p in named)
        values = "(" + "".join(f"{n}, " for n in names) + ")"
        body = (
            f"return {invoke_name}(*{pack_name}({values}, {names!r}, {keyword_only_from}, "
            f"{varargs or '()'}, {varkw or '{}'}))"
        )
    def_name = (
        func_name if func_name.isidentifier() and not keyword.iskeyword(func_name) else "proxy"
    )
    if def_name.startswith(helper):
        def_name = "proxy"
    source = (
        f"def _make({invoke_name}, {missing_name}, {pack_name}):\n"
        f"    def {def_name}({', '.join(source_params)}):\n"
        f"        {body}\n"
        f"    return {def_name}\n"
    )
    scope: dict[str, Any] = {}
    try:
        exec(compile(source, "<pypods proxy>", "exec"), scope)
    except SyntaxError:
        return None  # not expressible as a Python def (odd __signature__): no checks
    return scope["_make"](invoke, MISSING, pack_arguments)


def _str_or(value: Any, fallback: str) -> str:
    return value if isinstance(value, str) else fallback
