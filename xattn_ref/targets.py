"""Targets: the attention under test, loaded from ``package.module:name`` or ``file.py:name``.

Kernel kind: ``fn(q, k, v, mask) -> out`` in SDPA's layout, mask bool, **True = may attend**.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from xattn_ref import reference

__all__ = [
    "BUILTIN_KERNELS",
    "Target",
    "TargetLoadError",
    "as_layer",
    "builtin_layers",
    "load_target",
    "reference_kernel",
    "safe_sdpa_kernel",
    "sdpa_kernel",
]

Kind = Literal["kernel", "layer"]


class TargetLoadError(Exception):
    """The target spec cannot be turned into a callable; the message says why, in one line."""


@dataclass(frozen=True)
class Target:
    """An attention under test: its name (as given), the callable, and its kind."""

    name: str
    fn: Callable[..., Any]
    kind: Kind = "kernel"
    dims: tuple[int, int] | None = None  # (E, E_ctx) of a layer target


def reference_kernel(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """:func:`xattn_ref.reference.attention`."""
    return reference.attention(q, k, v, mask)


def sdpa_kernel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``torch.nn.functional.scaled_dot_product_attention`` with the bool mask as ``attn_mask``."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def safe_sdpa_kernel(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """:func:`xattn_ref.guard.safe_sdpa` with the bool mask as ``attn_mask``."""
    from xattn_ref.guard import safe_sdpa

    return safe_sdpa(q, k, v, attn_mask=mask)


#: name -> kernel: the correct kernels the property suite runs when no target is given.
BUILTIN_KERNELS: dict[str, Callable[..., torch.Tensor]] = {
    "reference": reference_kernel,
    "sdpa": sdpa_kernel,
    "safe_sdpa": safe_sdpa_kernel,
}


def as_layer(name: str, fn: Callable[..., Any], dims: tuple[int, int]) -> Target:
    """A layer target: ``fn(x, context, context_mask)`` wrapped once in a
    :class:`xattn_ref.layers.LayerTarget` (one module copy per dtype and device, kept)."""
    from xattn_ref.layers import LayerTarget

    return Target(name, LayerTarget(fn, *dims), "layer", dims)


def builtin_layers() -> list[Target]:
    """The correct layers the property suite runs when no target is given (E = 16)."""
    from xattn_ref.adapters import cross_attention_layer, multihead_attention_layer

    return [
        as_layer("cross_attention(safe_sdpa)", cross_attention_layer(dim=16), (16, 16)),
        as_layer(
            "nn.MultiheadAttention(need_weights=False)",
            multihead_attention_layer(16, 2, need_weights=False),
            (16, 16),
        ),
    ]


def _import(module: str) -> Any:
    if module.endswith(".py") or "/" in module or "\\" in module:
        path = Path(module)
        if not path.is_file():
            raise TargetLoadError(f"target file {module!r} does not exist")
        name = f"_xattn_target_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise TargetLoadError(f"target file {module!r} cannot be imported as Python")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        try:
            spec.loader.exec_module(mod)
        except Exception as exc:
            raise TargetLoadError(f"importing {module!r} raised {type(exc).__name__}: {exc}") from exc
        return mod
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise TargetLoadError(f"module {module!r} not found ({exc})") from exc
    except Exception as exc:
        raise TargetLoadError(f"importing {module!r} raised {type(exc).__name__}: {exc}") from exc


def load_target(spec: str, kind: Kind = "kernel", dims: tuple[int, int] | None = None) -> Target:
    """``'package.module:name'`` or ``'path/to/file.py:name'``; ``name()`` calls a zero-argument
    factory once (for example to build an ``nn.Module``). A layer needs ``dims`` (E, E_ctx).
    Raises :class:`TargetLoadError`."""
    if not isinstance(spec, str) or ":" not in spec:
        raise TargetLoadError(
            f"target {spec!r} must look like 'package.module:name' or 'path/to/file.py:name'"
        )
    module, _, attr = spec.rpartition(":")
    factory = attr.endswith("()")
    attr = attr.removesuffix("()")
    if not module or not attr:
        raise TargetLoadError(
            f"target {spec!r} must look like 'package.module:name' or 'path/to/file.py:name'"
        )
    obj: Any = _import(module)
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise TargetLoadError(f"{module!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if factory:
        if not callable(obj):
            raise TargetLoadError(f"{spec!r}: {attr!r} is {type(obj).__name__}, not a callable factory")
        try:
            obj = obj()
        except Exception as exc:
            raise TargetLoadError(f"{spec!r}: the factory raised {type(exc).__name__}: {exc}") from exc
    if not callable(obj):
        raise TargetLoadError(
            f"{spec!r} is {type(obj).__name__}, not callable; expected a function "
            + ("fn(q, k, v, mask)" if kind == "kernel" else "fn(x, context, context_mask)")
        )
    if kind == "layer":
        if dims is None:
            raise TargetLoadError(f"{spec!r}: a layer target needs its dims (E, E_ctx)")
        return as_layer(spec, obj, dims)
    return Target(spec, obj, kind)
