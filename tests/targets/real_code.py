"""Attention written as real libraries write it, for tests/test_real_code.py: each is correct
under a convention the gate lets its user declare (and wrong, or unreachable, without it)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


def tiled_gqa_kernel(q, k, v, mask):
    """Grouped kv heads by tiling: query head h reads kv head h % H_kv (k.repeat)."""
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat(1, groups, 1, 1), v.repeat(1, groups, 1, 1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class CausalAttend(nn.Module):
    """Causal by construction (x-transformers' ``Attend(causal=True)``): no ``is_causal``
    argument, bottom-right aligned, and documented for Lq <= Lk only."""

    def forward(self, q, k, v, mask):
        lq, lk = q.shape[2], k.shape[2]
        if lq > lk:
            raise ValueError("CausalAttend needs no more queries than keys")
        causal = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril(lk - lq)
        allowed = causal if mask is None else mask & causal
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        return out


def with_lse(q, k, v, mask):
    """Returns ``(lse, out)``, as kernels that expose their log-sum-exp often do."""
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return torch.zeros(q.shape[:3], dtype=q.dtype), out


class CheckpointedCrossAttention(nn.Module):
    """A cross-attention layer under reentrant activation checkpointing, which rejects
    ``torch.autograd.grad``; keyword-only mask."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.mha = nn.MultiheadAttention(dim, 2, batch_first=True)

    def _attend(self, x, context, pad):
        return self.mha(x, context, context, key_padding_mask=pad, need_weights=False)[0]

    def forward(self, x, context, *, padding):
        return checkpoint(self._attend, x, context, padding, use_reentrant=True)


class MeanOfPaddingCrossAttention(nn.Module):
    """Cross-attention with a ``finfo.min`` fill, as Hugging Face eager attention: a query whose
    context is all padding averages the padding (finite, and documented)."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.q, self.kv = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim)

    def forward(self, x, context, context_mask):
        k, v = self.kv(context).chunk(2, dim=-1)
        s = self.q(x) @ k.transpose(1, 2) / k.shape[-1] ** 0.5
        s = s.masked_fill(~context_mask[:, None, :], torch.finfo(s.dtype).min)
        return s.softmax(-1) @ v


def flex_block_mask_kernel(q, k, v, mask):
    """FlexAttention with the gate's BlockMask (``--mask block``), uncompiled (the CPU)."""
    from torch.nn.attention.flex_attention import flex_attention

    return flex_attention(q, k, v, block_mask=mask)


def flex_partial_blocks_as_full(q, k, v, mask):
    """Known bad: block sparsity without the mask inside a block (the mask_mod dropped), so a
    partly padded block is attended in full."""
    from torch.nn.attention.flex_attention import flex_attention, noop_mask

    if mask is not None:
        mask = mask._adjust(mask.seq_lengths[0], mask.seq_lengths[1])
        mask.mask_mod = noop_mask
    return flex_attention(q, k, v, block_mask=mask)
