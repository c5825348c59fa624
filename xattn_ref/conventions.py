"""Mask conventions and layouts, converted here and nowhere else.

xattn_ref's conventions:

- kernel masks are bool, **True = may attend** (SDPA's ``attn_mask``);
- layer and encoder masks are ``(B, L)`` bool, **True = a real token** (x-transformers'
  ``context_mask``).

Other conventions: ``nn.MultiheadAttention``'s ``key_padding_mask`` has **True = padding**
(ignore); additive float masks use ``0`` to attend and ``-inf`` to mask.

Other layouts: Hugging Face attention functions take a ``module`` (:func:`hf_module`) and return
``(B, Lq, H, Dv)``; packed variable-length kernels take ``(total, H, D)`` tensors and
``cu_seqlens`` (:func:`pack`, :func:`unpack`). The kinds ``hf`` and ``varlen``
(:mod:`xattn_ref.kinds`) use them.

Wrapping your own API is one line::

    target = lambda q, k, v, mask: my_attention(q, k, v, pad=padding_from_allowed(mask))
"""

from __future__ import annotations

import torch
from torch import nn

from xattn_ref.errors import XattnArgumentError
from xattn_ref.guard import MASKED_AT

__all__ = [
    "additive_from_allowed",
    "allowed_from_additive",
    "allowed_from_padding",
    "hf_module",
    "pack",
    "padding_from_allowed",
    "unpack",
]


def _bool(mask: object, name: str) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise XattnArgumentError(
            f"{name} must be a bool tensor, got {getattr(mask, 'dtype', type(mask).__name__)}"
        )
    return mask


def padding_from_allowed(mask: torch.Tensor) -> torch.Tensor:
    """True = may attend -> True = padding (``key_padding_mask``). A new tensor."""
    return ~_bool(mask, "mask")


def allowed_from_padding(padding_mask: torch.Tensor) -> torch.Tensor:
    """True = padding (``key_padding_mask``) -> True = may attend. A new tensor."""
    return ~_bool(padding_mask, "padding_mask")


def additive_from_allowed(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """True = may attend -> additive float mask: 0 where allowed, ``-inf`` where masked."""
    zeros = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return zeros.masked_fill(~_bool(mask, "mask"), float("-inf"))


def allowed_from_additive(mask: torch.Tensor) -> torch.Tensor:
    """Additive float mask -> True = may attend: every entry above
    :data:`xattn_ref.guard.MASKED_AT` (``-1e4``); ``-inf`` and sentinels such as
    ``finfo(dtype).min``, ``-1e4`` and ``-1e9`` are masked keys."""
    if not isinstance(mask, torch.Tensor) or not mask.is_floating_point():
        raise XattnArgumentError(
            f"mask must be a floating-point additive mask, got {getattr(mask, 'dtype', mask)}"
        )
    return mask > MASKED_AT


def hf_module(num_key_value_groups: int = 1, *, is_causal: bool = False) -> nn.Module:
    """The ``module`` a Hugging Face attention function (``sdpa_attention_forward``,
    ``eager_attention_forward``) reads: ``num_key_value_groups`` (query heads per kv head),
    ``is_causal``, and eval mode (no dropout)."""
    module = nn.Module()
    module.num_key_value_groups = num_key_value_groups  # type: ignore[assignment]
    module.is_causal = is_causal  # type: ignore[assignment]
    return module.eval()


def pack(t: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(B, H, L, D)`` with sequence b in its first ``lengths[b]`` positions -> the packed
    ``(total, H, D)`` layout of variable-length kernels, ``cu_seqlens`` (int32, ``(B + 1,)``,
    cumulative lengths from 0) and the longest length. Differentiable; a new tensor."""
    b, _, length, _ = t.shape
    keep = torch.arange(length, device=t.device) < lengths.to(t.device).unsqueeze(-1)  # (B, L)
    packed = t.transpose(1, 2)[keep]  # (total, H, D), sequences in batch order
    cu = torch.zeros(b + 1, dtype=torch.int32, device=t.device)
    cu[1:] = torch.cumsum(lengths.to(t.device), 0)
    return packed, cu, int(lengths.max()) if b else 0


def unpack(packed: torch.Tensor, cu_seqlens: torch.Tensor, length: int) -> torch.Tensor:
    """The inverse of :func:`pack`: ``(total, H, D)`` -> ``(B, H, L, D)``, zeros past each
    sequence's length."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).to(packed.device)
    b = lengths.shape[0]
    keep = torch.arange(length, device=packed.device) < lengths.unsqueeze(-1)
    out = packed.new_zeros(b, length, *packed.shape[1:])
    out = out.index_put((keep,), packed) if packed.shape[0] else out
    return out.transpose(1, 2)
