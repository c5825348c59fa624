"""Known-bad layers, ``fn(x, context, context_mask) -> y`` with context_mask True = a real
token: zero-argument factories (E = 16), each declaring the property that catches it."""

from __future__ import annotations

from typing import Any

import torch

from xattn_ref.zoo.adapters import cross_attention_layer
from xattn_ref.zoo.known_bad._registry import known_bad
from xattn_ref.zoo.known_bad.kernels import (
    _guarded,
    batch_global_max,
    dk_doubled,
    finfo_min_fill,
    half_precision_math,
    neg_inf_softmax,
)


def _layer(kernel: Any) -> torch.nn.Module:
    return cross_attention_layer(kernel, dim=16)


class _ZeroesPaddingInPlace(torch.nn.Module):
    """Zeroes the caller's padded context in place before attending ("cleaning" the input)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = cross_attention_layer(dim=16)

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        context.masked_fill_(~context_mask.unsqueeze(-1), 0.0)  # the defect: the caller's tensor
        y: torch.Tensor = self.inner(x, context, context_mask)
        return y


class _MeanPooledContext(torch.nn.Module):
    """Adds the mean of the context over *all* positions, padding included, to every query."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = cross_attention_layer(dim=16)

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.inner(x, context, context_mask)
        return y + context.mean(1, keepdim=True) * context_mask.any(-1)[:, None, None]


@known_bad("padding_invariance", kind="layer")
def finfo_min_fill_layer() -> torch.nn.Module:
    """Cross-attention with :func:`finfo_min_fill`: a fully padded context leaks into y."""
    return _layer(finfo_min_fill)


@known_bad("finite_output", kind="layer")
def neg_inf_softmax_layer() -> torch.nn.Module:
    """Cross-attention with :func:`neg_inf_softmax`: NaN for a fully padded context."""
    return _layer(neg_inf_softmax)


@known_bad("batch_independence", kind="layer")
def batch_global_max_layer() -> torch.nn.Module:
    """Cross-attention with :func:`batch_global_max`: batch elements interfere."""
    return _layer(batch_global_max)


@known_bad("dtype_consistency", kind="layer")
def half_precision_math_layer() -> torch.nn.Module:
    """Cross-attention with :func:`half_precision_math`: float32 loses precision."""
    return _layer(half_precision_math)


@known_bad("no_input_mutation", kind="layer")
def zeroes_padding_in_place_layer() -> torch.nn.Module:
    """Writes zeros into the caller's context."""
    return _ZeroesPaddingInPlace()


@known_bad("compaction_equivalence", kind="layer")
def mean_pooled_context_layer() -> torch.nn.Module:
    """Mean-pools the context with its padding: removing the padding changes y."""
    return _MeanPooledContext()


class _PooledWithPadding(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.mha = torch.nn.MultiheadAttention(16, 2, batch_first=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        y, _ = self.mha(x, x, x, key_padding_mask=~mask, need_weights=False)
        out: torch.Tensor = y + x.mean(1, keepdim=True)  # the pooled summary averages the padding too
        return out


@known_bad("padding_invariance", kind="encoder", options={"dim": 16})
def pooled_with_padding_layer() -> torch.nn.Module:
    """A self-attention layer (``--kind encoder``, E = 16) that adds a mean-pooled summary of the
    sequence to every token, padded positions included: the real tokens' outputs depend on the
    padding."""
    return _PooledWithPadding().eval()


def _half_path_dk_doubled(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    if q.dtype in (torch.float16, torch.bfloat16):
        return dk_doubled(q, k, v, mask)  # the fused half-precision kernel, its backward wrong
    return _guarded(q, k, v, mask)


@known_bad("dtype_consistency", kind="layer")
def half_path_wrong_grad_layer() -> torch.nn.Module:
    """Cross-attention that takes a fused kernel for float16 and bfloat16 inputs, as layers pick
    flash kernels for half precision, whose backward doubles dk: y is right in every dtype; the
    gradients of the context and of the key projection are wrong in half precision alone."""
    return _layer(_half_path_dk_doubled)
