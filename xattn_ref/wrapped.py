"""Seeing through the ways users wrap a model: a subclass whose ``forward`` takes ``**kwargs``, a
PEFT model, a ``torch.compile``d module, a plain function that calls a model it holds (in a
closure, or as a global of its module), a ``functools.partial``.

- :func:`modules_of`: the ``nn.Module`` objects a plain function calls, by name;
- :func:`rebound`: the function with each of those modules copied to a dtype and device, so a
  function over a model runs in every dtype the gate asks for, as a module does;
- :func:`inner_model`: the Hugging Face model underneath any of these;
- :func:`accepts`: whether a model's ``forward`` takes an argument, looked up through
  ``**kwargs`` wrappers to the first ``forward`` that names its parameters.
"""

from __future__ import annotations

import copy
import functools
import inspect
import types
from typing import Any

import torch

__all__ = ["accepts", "inner_model", "is_hf_model", "modules_of", "rebound"]


def is_hf_model(fn: object) -> bool:
    """Whether ``fn`` is a Hugging Face ``transformers`` model (its class or a base comes from
    ``transformers`` and it has a config)."""
    return hasattr(fn, "config") and any(c.__module__.startswith("transformers.") for c in type(fn).__mro__)


def modules_of(fn: Any) -> dict[str, torch.nn.Module]:
    """The modules a plain function (or a ``functools.partial`` of one) holds: its closure's
    cells and the globals its code names, by name (none for a module itself: it is not a plain
    function); for a function :func:`rebound` made, the copies it holds."""
    copies = getattr(fn, "__xattn_modules__", None)
    if copies is not None:
        return dict(copies)
    if isinstance(fn, functools.partial):
        found = {f"arg{i}": a for i, a in enumerate(fn.args) if isinstance(a, torch.nn.Module)}
        found.update({k: a for k, a in fn.keywords.items() if isinstance(a, torch.nn.Module)})
        return {**found, **modules_of(fn.func)}
    if not isinstance(fn, types.FunctionType):
        return {}
    found = {}
    for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if isinstance(value, torch.nn.Module):
            found[name] = value
    for name in _global_names(fn.__code__):
        value = fn.__globals__.get(name)
        if isinstance(value, torch.nn.Module):
            found[name] = value
    return found


def _global_names(code: types.CodeType) -> list[str]:
    names = list(code.co_names)
    for const in code.co_consts:  # nested functions and comprehensions
        if isinstance(const, types.CodeType):
            names += _global_names(const)
    return names


def rebound(fn: Any, dtype: torch.dtype, device: str) -> Any:
    """``fn`` with every module it holds (:func:`modules_of`) replaced by a copy in ``dtype`` on
    ``device``, in eval mode; the caller's modules are left as they are. ``fn`` itself when it
    holds none."""
    held = modules_of(fn)
    if not held:
        return fn
    copies = {name: copy.deepcopy(m).to(device=device, dtype=dtype).eval() for name, m in held.items()}
    return _with(fn, copies)


def _with(fn: Any, copies: dict[str, torch.nn.Module]) -> Any:
    if isinstance(fn, functools.partial):
        args = [copies.get(f"arg{i}", a) for i, a in enumerate(fn.args)]
        keywords = {k: copies.get(k, a) for k, a in fn.keywords.items()}
        return functools.partial(_with(fn.func, copies), *args, **keywords)
    cells = tuple(
        types.CellType(copies[name]) if name in copies else cell
        for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ())
    )
    names = set(_global_names(fn.__code__))
    scope = {**fn.__globals__, **{n: m for n, m in copies.items() if n in names}}
    new = types.FunctionType(fn.__code__, scope, fn.__name__, fn.__defaults__, cells or None)
    new.__kwdefaults__ = fn.__kwdefaults__
    new.__dict__.update(fn.__dict__)
    new.__xattn_modules__ = copies  # type: ignore[attr-defined]
    return functools.update_wrapper(new, fn, updated=())


def inner_model(fn: Any) -> Any:
    """The Hugging Face model ``fn`` is, or wraps (a compiled module's ``_orig_mod``, a PEFT
    model's base model, the one model a plain function holds); None when there is none."""
    seen: set[int] = set()
    while fn is not None and id(fn) not in seen:
        seen.add(id(fn))
        if is_hf_model(fn) and not hasattr(fn, "get_base_model"):
            return fn
        if hasattr(fn, "_orig_mod"):  # torch.compile's OptimizedModule
            fn = fn._orig_mod
        elif hasattr(fn, "get_base_model"):  # a PEFT model
            fn = fn.get_base_model()
        else:
            models = [m for m in modules_of(fn).values() if inner_model(m) is not None]
            fn = inner_model(models[0]) if len(models) == 1 else None
    return None


def accepts(fn: Any, name: str) -> bool:
    """Whether ``fn`` (a model's ``forward``, or a function) takes an argument ``name``: named in
    its signature, or, where it takes ``**kwargs`` (a subclass's ``forward(*args, **kwargs)``, a
    PEFT or compiled wrapper), in the signature of the model underneath."""
    model = inner_model(fn) if not isinstance(fn, types.FunctionType) else None
    for candidate in (fn, model):
        if candidate is None:
            continue
        for method in _forwards(candidate):
            try:
                params = inspect.signature(method).parameters
            except (TypeError, ValueError):
                continue
            if name in params:
                return True
            if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
                break  # a forward that names its parameters, and not this one
    return False


def _forwards(fn: Any) -> list[Any]:
    """``fn``'s forward and those of its bases, most derived first (a function: itself)."""
    if not isinstance(fn, torch.nn.Module):
        return [fn]
    return [c.__dict__["forward"] for c in type(fn).__mro__ if "forward" in c.__dict__]
