"""The reference: guarded softmax attention computed in float64.

Mask convention: ``True`` = may attend (as in ``torch.nn.functional.scaled_dot_product_attention``).
A row of the mask with no ``True`` is an *empty row*: its output is exactly zero and it
contributes exactly zero gradient to q, k and v.
"""

from __future__ import annotations

import torch

from xattn_ref._args import (
    broadcast_mask_shape,
    check_bool_mask,
    check_case_extras,
    check_qkv,
    check_softcap_sinks,
)
from xattn_ref._kernel import guarded_attention
from xattn_ref.cases import causal_mask

__all__ = ["attention", "default_scale"]


def default_scale(head_dim: int) -> float:
    """``head_dim ** -0.5``, SDPA's default."""
    return float(head_dim**-0.5)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    scale: float | None = None,
    bias: torch.Tensor | None = None,
    causal: str | None = None,
    softcap: float | None = None,
    sinks: torch.Tensor | None = None,
) -> torch.Tensor:
    """Guarded scaled dot-product attention, computed in float64.

    Args:
        q: ``(B, H, Lq, D)``.
        k: ``(B, H_kv, Lk, D)``; ``Lk`` is independent of ``Lq`` (cross-attention); H_kv
            divides H and query head h uses kv head ``h // (H // H_kv)`` (grouped-query).
        v: ``(B, H_kv, Lk, Dv)``.
        mask: ``None`` or a bool tensor broadcastable to ``(B, H, Lq, Lk)``;
            **True = may attend**. A query row with no allowed key outputs zeros.
        scale: multiplies ``q @ k^T``; default ``D ** -0.5``.
        bias: ``None`` or a finite float tensor broadcastable to ``(B, H, Lq, Lk)`` added to the
            logits (relative-position, ALiBi); it never unmasks a key.
        causal: ``None``, ``"top_left"`` (SDPA's ``is_causal``: key j <= query i) or
            ``"bottom_right"`` (j <= i + Lk - Lq), combined with ``mask`` (both must allow a key).
        softcap: ``None`` or a number > 0: the scaled logits become ``softcap * tanh(s /
            softcap)`` before the bias and the mask (Gemma 2, flash-attention's ``softcap``).
        sinks: ``None`` or a float tensor ``(H,)``: a logit per query head in every row's softmax
            denominator, with no value (gpt-oss): ``P_ij = e^{s_ij} / (sum_k e^{s_ik} +
            e^{sink_h})``. A row with no allowed key still outputs zeros.

    Returns:
        ``(B, H, Lq, Dv)`` in the dtype and on the device of ``q``. Differentiable; the
        arguments are never modified.

    Example::

        >>> q = k = v = torch.ones(1, 1, 2, 4)
        >>> mask = torch.tensor([[True, True], [False, False]])   # row 1 allows no key
        >>> attention(q, k, v, mask)[0, 0]
        tensor([[1., 1., 1., 1.],
                [0., 0., 0., 0.]])
    """
    q, k, v = check_qkv(q, k, v)
    shape = broadcast_mask_shape(q, k)
    if mask is not None:
        mask = check_bool_mask(mask, shape)
    check_case_extras(scale, bias, causal, shape, q)
    check_softcap_sinks(softcap, sinks, q)
    if scale is None:
        scale = default_scale(q.shape[-1])
    if causal is not None:
        tri = causal_mask(causal, shape[2], shape[3], q.device)
        mask = tri if mask is None else mask & tri
    # MPS has no float64: compute on the CPU there and move the result back.
    compute_device = torch.device("cpu") if q.device.type == "mps" else q.device
    out = guarded_attention(
        q.to(compute_device),
        k.to(compute_device),
        v.to(compute_device),
        None if mask is None else mask.to(compute_device),
        float(scale),
        torch.float64,
        None if bias is None else bias.to(compute_device),
        softcap,
        None if sinks is None else sinks.to(compute_device),
    )
    return out.to(device=q.device, dtype=q.dtype)
