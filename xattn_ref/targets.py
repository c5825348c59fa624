"""Targets: the attention under test, loaded from ``package.module:name`` or ``file.py:name``.

A spec is looked up as ``python -m`` does (the current folder is on the path), and a file
target can import the modules beside it. ``name()`` calls a factory, and ``name(causal=True,
attn_implementation="eager")`` calls it with those arguments (Python literals only): once, or
once per dtype and device when it requires ``dtype`` and ``device`` arguments (so a factory
can build a module, and wrap it in a lambda, in each dtype); a factory that only *accepts* them
(an ``nn.Module`` class) is called once. An ``nn.Module`` is copied to each dtype and device and
put in eval mode, and so is each module a plain function holds (in a closure, or as a global of
its module: :func:`xattn_ref.wrapped.rebound`). The kinds (``kernel``, ``layer``) are declared in
:mod:`xattn_ref.kinds`.
"""

from __future__ import annotations

import ast
import copy
import functools
import importlib
import importlib.util
import inspect
import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from xattn_ref.errors import TargetLoadError, UsageError
from xattn_ref.kinds import KINDS, Kind, resolve_options
from xattn_ref.wrapped import rebound

__all__ = ["Target", "as_target", "load_target"]


@dataclass(frozen=True, eq=False)
class Target:
    """An attention under test.

    - ``name``: the spec as given (``xattn-check NAME`` runs it again), or for a built-in target
      with dialect options, the spec and those options (unique in the main job);
    - ``kind``: its :class:`~xattn_ref.kinds.Kind` (one of :data:`xattn_ref.kinds.KINDS`);
    - ``options``: the kind's options (a layer's ``dim`` and ``context_dim``);
    - ``obj``: the callable, or the factory when ``factory`` is True.
    """

    name: str
    kind: Kind
    obj: Any
    options: dict[str, Any] = field(default_factory=dict)
    factory: bool = False
    spec: str | None = None  # the spec, when ``name`` is not it
    arguments: tuple[tuple[Any, ...], dict[str, Any]] = ((), {})  # the factory's, from the spec
    #: dtype name -> why the target cannot run in it (float64, which some models take no part in:
    #: found by :func:`xattn_ref.plan.probe`); such runs are skipped with the reason
    unusable: dict[str, str] = field(default_factory=dict)

    @functools.cached_property
    def _per_dtype_factory(self) -> bool:
        if not self.factory:
            return False
        try:
            params = inspect.signature(self.obj).parameters
        except (TypeError, ValueError):
            return False
        # required ones only: a module class that merely accepts them (nn.MultiheadAttention) is
        # built once and copied to each dtype, so every dtype has the same weights
        empty = inspect.Parameter.empty
        return all(n in params and params[n].default is empty for n in ("dtype", "device"))

    @functools.cached_property
    def _made(self) -> Any:
        args, kwargs = self.arguments
        return self.obj(*args, **kwargs) if self.factory and not self._per_dtype_factory else self.obj

    @functools.cache  # noqa: B019 (one per target, kept for the run)
    def fn_for(self, dtype: torch.dtype, device: str) -> Callable[..., Any]:
        """The callable for one dtype and device."""
        if self._per_dtype_factory:
            args, kwargs = self.arguments
            return self.obj(*args, **kwargs, dtype=dtype, device=device)  # type: ignore[no-any-return]
        made = self._made
        if isinstance(made, torch.nn.Module):
            return copy.deepcopy(made).to(device=device, dtype=dtype).eval()
        # a function over modules: copies of them in the dtype
        return rebound(made, dtype, device)  # type: ignore[no-any-return]

    @functools.cached_property
    def call(self) -> Any:
        """The target bound to its kind (:class:`xattn_ref.kinds.KernelCall` or ``LayerCall``)."""
        return self.kind.make_call(self.fn_for, self.options, True)

    def given_options(self) -> dict[str, Any]:
        """The options that differ from the kind's defaults (what ``plan.load`` needs to load this
        target again)."""
        defaults = {o.name: o.default for o in self.kind.options}
        return {n: v for n, v in self.options.items() if v != defaults.get(n)}

    def cli_args(self) -> tuple[str, ...]:
        """The ``xattn-check`` arguments that name this target, its kind and its options."""
        args = [self.spec or self.name]
        if self.kind.name != "kernel":
            args += ["--kind", self.kind.name]
        for option in self.kind.options:
            if option.name in self.options:
                args += option.cli_args(self.options[option.name])
        return tuple(args)

    @property
    def signature(self) -> str:
        """How the target is called: its kind's signature in its dialect, one line."""
        return self.kind.describe(self.options) or self.kind.signature

    def command(self) -> str:
        return shlex.join(("xattn-check", *self.cli_args()))


def as_target(
    fn: Callable[..., Any], *, kind: str = "kernel", name: str | None = None, **options: Any
) -> Target:
    """A target of a callable you hold (``options``: the kind's, e.g. ``dim=16`` for a layer), to
    run properties in-process: ``run_property(as_target(my_kernel), "finite_output", ...)``."""
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    try:
        resolved = resolve_options(kind, options, prefix="")
    except UsageError as exc:
        raise TypeError(str(exc)) from None
    target = Target(name or str(getattr(fn, "__name__", type(fn).__name__)), KINDS[kind], fn, resolved)
    try:
        target.kind.complete(target.options, target.fn_for)
    except ValueError as exc:
        raise TypeError(str(exc).replace("--", "")) from None
    return target


def _import(module: str) -> Any:
    if module.endswith(".py") or "/" in module or "\\" in module:
        path = Path(module)
        if not path.is_file():
            raise TargetLoadError(f"target file {module!r} does not exist")
        folder = str(path.resolve().parent)
        if folder not in sys.path:  # the file may import the modules beside it
            sys.path.insert(0, folder)
        name = f"_xattn_target_{path.stem}"
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise TargetLoadError(f"target file {module!r} cannot be imported as Python")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        try:
            spec.loader.exec_module(mod)
        except Exception as exc:
            del sys.modules[name]
            raise TargetLoadError(f"importing {module!r} raised {type(exc).__name__}: {exc}") from exc
        return mod
    if os.getcwd() not in sys.path and "" not in sys.path:  # as `python -m` does
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise TargetLoadError(f"module {module!r} not found ({exc})") from exc
    except Exception as exc:
        raise TargetLoadError(f"importing {module!r} raised {type(exc).__name__}: {exc}") from exc


def _factory_call(spec: str, text: str) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    """``name(1, causal=True)`` -> ``("name", (1,), {"causal": True})``; literals only."""
    name, _, rest = text.partition("(")
    example = f"'{name}(causal=True, heads=4, attn_implementation=\"eager\")'"
    try:
        call = ast.parse(f"f({rest}", mode="eval").body
    except SyntaxError as exc:
        why = f"the factory's call is not Python ({exc.msg})"
        raise TargetLoadError(f"target {spec!r}: {why}; e.g. {example}") from None
    if not isinstance(call, ast.Call) or any(k.arg is None for k in call.keywords):
        raise TargetLoadError(f"target {spec!r}: the factory's arguments must be plain, e.g. {example}")

    def literal(node: ast.expr) -> Any:
        try:
            return ast.literal_eval(node)
        except ValueError:
            raise TargetLoadError(
                f"target {spec!r}: the factory's argument {ast.unparse(node)} is not a Python literal "
                "(a number, a string in quotes, True, False, None, a tuple, list or dict of them); "
                f"e.g. {example}"
            ) from None

    args = tuple(literal(a) for a in call.args)
    kwargs = {str(k.arg): literal(k.value) for k in call.keywords}
    return name.strip(), args, kwargs


def load_target(spec: str, kind: str = "kernel", options: dict[str, Any] | None = None) -> Target:
    """``'package.module:name'`` or ``'path/to/file.py:name'``; ``name()`` is a factory, and
    ``name(causal=True, dim=64)`` one called with these literal arguments. ``options`` are the
    kind's (see :func:`resolve_options`). Raises :class:`TargetLoadError`."""
    shape = "must look like 'package.module:name' or 'path/to/file.py:name'"
    if not isinstance(spec, str) or ":" not in spec:
        raise TargetLoadError(f"target {spec!r} {shape}")
    if kind not in KINDS:
        raise TargetLoadError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    head, paren, tail = spec.partition("(")
    module, _, attr = head.rpartition(":")
    factory = bool(paren)
    arguments: tuple[tuple[Any, ...], dict[str, Any]] = ((), {})
    if factory:
        if not tail.rstrip().endswith(")"):
            raise TargetLoadError(f"target {spec!r}: the factory's call has no closing ')'")
        attr, args, kwargs = _factory_call(spec, attr + paren + tail)
        arguments = (args, kwargs)
    if not module or not attr:
        raise TargetLoadError(f"target {spec!r} {shape}")
    obj: Any = _import(module)
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise TargetLoadError(f"{module!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        what = "a callable factory" if factory else f"callable; expected {KINDS[kind].signature}"
        raise TargetLoadError(f"{spec!r} is {type(obj).__name__}, not {what}")
    target = Target(spec, KINDS[kind], obj, dict(options or {}), factory, arguments=arguments)
    if factory and not target._per_dtype_factory:
        try:
            made = target._made
        except Exception as exc:
            raise TargetLoadError(f"{spec!r}: the factory raised {type(exc).__name__}: {exc}") from exc
        if not callable(made):
            raise TargetLoadError(f"{spec!r}: the factory returned {type(made).__name__}, not a callable")
    try:
        target.kind.complete(target.options, target.fn_for)
    except ValueError as exc:
        raise TargetLoadError(f"{spec!r}: {exc}") from None
    return target
