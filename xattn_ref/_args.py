"""Argument checks shared by the public functions: one-line errors that name the argument.

Tensors (reference, guard, cases) raise :class:`xattn_ref.errors.XattnArgumentError`; strategy
arguments raise Hypothesis's ``InvalidArgument`` when the test runs (strategies are built
lazily), as Hypothesis's own strategies do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from xattn_ref.errors import XattnArgumentError

__all__ = [
    "broadcast_mask_shape",
    "check_bool_mask",
    "check_case_extras",
    "check_choices",
    "check_int",
    "check_range",
    "check_qkv",
    "check_softcap_sinks",
    "lazy",
]

T = TypeVar("T")


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def check_qkv(q: object, k: object, v: object) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check the SDPA layout: q (B, H, Lq, D), k (B, H_kv, Lk, D), v (B, H_kv, Lk, Dv), with
    H_kv dividing H (grouped-query attention, SDPA's ``enable_gqa`` semantics)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise XattnArgumentError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim != 4:
            raise XattnArgumentError(f"{name} must have 4 dimensions (B, H, L, D), got shape {_shape(t)}")
        if not t.is_floating_point():
            raise XattnArgumentError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    assert isinstance(q, torch.Tensor) and isinstance(k, torch.Tensor) and isinstance(v, torch.Tensor)
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise XattnArgumentError(
            f"q, k and v must share one dtype, got q {q.dtype}, k {k.dtype}, v {v.dtype}"
        )
    if k.device != q.device or v.device != q.device:
        raise XattnArgumentError(
            f"q, k and v must share one device, got q {q.device}, k {k.device}, v {v.device}"
        )
    if k.shape[0] != q.shape[0] or v.shape[:2] != k.shape[:2]:
        raise XattnArgumentError(
            f"q, k and v must share B, and k and v H_kv, got q {_shape(q)}, k {_shape(k)}, v {_shape(v)}"
        )
    if q.shape[1] % k.shape[1]:
        raise XattnArgumentError(
            f"the kv heads H_kv={k.shape[1]} must divide the query heads H={q.shape[1]} (grouped-query "
            f"attention), got q {_shape(q)}, k {_shape(k)}"
        )
    if k.shape[-1] != q.shape[-1]:
        raise XattnArgumentError(f"k must have the head dim D={q.shape[-1]} of q, got k {_shape(k)}")
    if v.shape[2] != k.shape[2]:
        raise XattnArgumentError(f"v must have the length Lk={k.shape[2]} of k, got v {_shape(v)}")
    return q, k, v


def broadcast_mask_shape(q: torch.Tensor, k: torch.Tensor) -> tuple[int, int, int, int]:
    """(B, H, Lq, Lk): the shape a mask for these q and k broadcasts to."""
    b, h, lq, _ = q.shape
    return (b, h, lq, k.shape[2])


def check_bool_mask(mask: object, shape: tuple[int, int, int, int], *, name: str = "mask") -> torch.Tensor:
    """Check a bool mask (True = may attend) broadcastable to ``shape``."""
    if not isinstance(mask, torch.Tensor):
        raise XattnArgumentError(
            f"{name} must be None or a bool torch.Tensor (True = may attend), got {type(mask).__name__}"
        )
    if mask.dtype != torch.bool:
        raise XattnArgumentError(
            f"{name} must be a bool tensor (True = may attend), got dtype {mask.dtype}; "
            "convert additive or padding masks with xattn_ref.conventions"
        )
    ndim_ok = mask.ndim <= 4
    sizes = (1,) * (4 - mask.ndim) + tuple(mask.shape) if ndim_ok else ()
    ok = ndim_ok and all(m in (1, s) for m, s in zip(sizes, shape))
    if not ok:
        raise XattnArgumentError(
            f"{name} of shape {_shape(mask)} does not broadcast to (B, H, Lq, Lk) = {shape}"
        )
    return mask


def check_case_extras(
    scale: object, bias: object, causal: object, shape: tuple[int, int, int, int], q: torch.Tensor
) -> None:
    """Check a case's scale (None or a finite number), bias (None or a finite float tensor
    broadcastable to ``shape``, on q's device) and causal alignment (None or one of them)."""
    if scale is not None and (
        not isinstance(scale, (int, float)) or isinstance(scale, bool) or not abs(scale) < float("inf")
    ):
        raise XattnArgumentError(f"scale must be None or a finite number, got {scale!r}")
    if causal is not None and causal not in ("top_left", "bottom_right"):
        raise XattnArgumentError(f"causal must be None, 'top_left' or 'bottom_right', got {causal!r}")
    if bias is None:
        return
    if not isinstance(bias, torch.Tensor) or not bias.is_floating_point():
        raise XattnArgumentError(f"bias must be None or a float torch.Tensor, got {type(bias).__name__}")
    sizes = (1,) * (4 - bias.ndim) + tuple(bias.shape) if bias.ndim <= 4 else ()
    if not sizes or not all(m in (1, s) for m, s in zip(sizes, shape)):
        raise XattnArgumentError(
            f"bias of shape {_shape(bias)} does not broadcast to (B, H, Lq, Lk) = {shape}"
        )
    if bias.device != q.device:
        raise XattnArgumentError(f"bias must be on q's device {q.device}, got {bias.device}")
    if not bool(bias.isfinite().all()):
        raise XattnArgumentError("bias must be finite: mask keys with the mask, not with -inf in the bias")


def check_softcap_sinks(softcap: object, sinks: object, q: torch.Tensor) -> None:
    """Check a soft-cap (None or a finite number > 0) and sinks (None or a finite float tensor
    of shape ``(H,)``, on q's device)."""
    if softcap is not None and (
        not isinstance(softcap, (int, float)) or isinstance(softcap, bool) or not 0 < softcap < float("inf")
    ):
        raise XattnArgumentError(f"softcap must be None or a finite number > 0, got {softcap!r}")
    if sinks is None:
        return
    if not isinstance(sinks, torch.Tensor) or not sinks.is_floating_point():
        raise XattnArgumentError(f"sinks must be None or a float torch.Tensor, got {type(sinks).__name__}")
    if tuple(sinks.shape) != (q.shape[1],):
        raise XattnArgumentError(f"sinks must have shape (H,) = ({q.shape[1]},), got {_shape(sinks)}")
    if sinks.device != q.device:
        raise XattnArgumentError(f"sinks must be on q's device {q.device}, got {sinks.device}")
    if not bool(sinks.isfinite().all()):
        raise XattnArgumentError("sinks must be finite")


def lazy(build: Callable[[], st.SearchStrategy[T]]) -> st.SearchStrategy[T]:
    """A strategy built (and its arguments validated) when the test runs, not at import."""
    return st.deferred(build)


def check_int(name: str, value: object, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument(f"{name} must be an int, but was {value!r}")
    if value < minimum:
        raise InvalidArgument(f"{name} must be at least {minimum}, but was {value!r}")
    return value


def check_choices(name: str, values: object, allowed: Sequence[object]) -> tuple:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise InvalidArgument(f"{name} must be a non-empty sequence, but was {values!r}")
    if not values:
        raise InvalidArgument(f"{name} must not be empty")
    for value in values:
        if value not in allowed:
            raise InvalidArgument(f"{name} contains {value!r}; expected values from {tuple(allowed)!r}")
    return tuple(values)


def check_range(low_name: str, low: int, high_name: str, high: int) -> None:
    if low > high:
        raise InvalidArgument(f"{low_name}={low} must be at most {high_name}={high}")
