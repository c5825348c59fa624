"""Argument checks shared by the public functions: one-line errors that name the argument."""

from __future__ import annotations

import torch

__all__ = ["XattnArgumentError", "check_qkv", "check_bool_mask", "broadcast_mask_shape"]


class XattnArgumentError(ValueError):
    """A bad argument: the message names it, says what was expected and what was given."""


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def check_qkv(q: object, k: object, v: object) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check the SDPA layout: q (B, H, Lq, D), k (B, H, Lk, D), v (B, H, Lk, Dv)."""
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
    if k.shape[:2] != q.shape[:2] or v.shape[:2] != q.shape[:2]:
        raise XattnArgumentError(
            f"q, k and v must share (B, H), got q {_shape(q)}, k {_shape(k)}, v {_shape(v)}"
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
            "convert additive or padding masks with xattn_ref.adapters"
        )
    ndim_ok = mask.ndim <= 4
    sizes = (1,) * (4 - mask.ndim) + tuple(mask.shape) if ndim_ok else ()
    ok = ndim_ok and all(m in (1, s) for m, s in zip(sizes, shape))
    if not ok:
        raise XattnArgumentError(
            f"{name} of shape {_shape(mask)} does not broadcast to (B, H, Lq, Lk) = {shape}"
        )
    return mask
