"""Memory layouts of a case's tensors: the same values, laid out as real callers hand them over.

======================  ==========================================================================
layout                  q, k, v (``(B, H, L, D)``) and the mask
======================  ==========================================================================
``contiguous``          as built (what examples shrink to)
``transposed``          views of ``(B, L, H, D)`` buffers, ``.transpose(1, 2)``: what Hugging Face
                        and most layers pass after splitting heads
``fused``               slices of one fused projection ``(B, L, 3, H, D)``: q in slot 0, k in 1, v
                        in 2 (a storage offset), as ``qkv.unbind(2)`` gives
``broadcast_mask``      q, k, v as built; the mask expanded to ``(B, H, Lq, Lk)`` with stride 0
                        over its broadcast dims (``mask.expand``), or transposed in memory when it
                        has none
======================  ==========================================================================

A kernel that reads its inputs as if contiguous (a raw pointer, a ``.view`` where ``.reshape`` was
needed, a fixed stride in a C++ or Triton kernel) is wrong exactly here. Every layout is made by
differentiable operations, so gradients reach the case's tensors.
"""

from __future__ import annotations

import torch

__all__ = ["MEMORY_LAYOUTS", "lay_out", "lay_out_mask"]

#: The layouts drawn, contiguous first (examples shrink toward it).
MEMORY_LAYOUTS: tuple[str, ...] = ("contiguous", "transposed", "fused", "broadcast_mask")

_SLOTS = {"q": 0, "k": 1, "v": 2}


def lay_out(t: torch.Tensor, layout: str, name: str) -> torch.Tensor:
    """``t`` (q, k or v: ``(B, H, L, D)``, named by ``name``) with the same values in ``layout``."""
    if layout not in MEMORY_LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(MEMORY_LAYOUTS)}, got {layout!r}")
    if layout == "transposed":
        return t.transpose(1, 2).contiguous().transpose(1, 2)
    if layout == "fused":
        slot = _SLOTS[name]
        blhd = t.transpose(1, 2)
        parts = [blhd if n == slot else torch.zeros_like(blhd) for n in range(3)]
        return torch.stack(parts, dim=2)[:, :, slot].transpose(1, 2)
    return t


def lay_out_mask(
    mask: torch.Tensor | None, layout: str, shape: tuple[int, int, int, int]
) -> torch.Tensor | None:
    """A 4-D mask (bool or float) in ``layout``: with ``broadcast_mask``, expanded to ``shape``
    ``(B, H, Lq, Lk)`` (stride 0 over its broadcast dims), or transposed in memory when it is
    full; other layouts and other masks as they are."""
    if layout != "broadcast_mask" or not isinstance(mask, torch.Tensor) or mask.ndim != 4:
        return mask
    if tuple(mask.shape) != shape:
        return mask.expand(shape)
    return mask.transpose(-1, -2).contiguous().transpose(-1, -2)
