"""The guarded softmax attention, written once, run in a chosen compute dtype.

``reference.attention`` runs it in float64 (the truth); the tolerance model runs it in the
input's own dtype (the "plain same-dtype implementation" whose error sets the budget).

Einstein notation: b batch, h heads, i query position, j key position, d head dim, e value dim.
"""

from __future__ import annotations

import torch

__all__ = ["capped", "expand_kv", "guarded_attention", "plain_attention", "with_sinks"]


def expand_kv(t: torch.Tensor, num_heads: int) -> torch.Tensor:
    """k or v ``(B, H_kv, L, D)`` repeated to ``num_heads`` heads: query head h uses kv head
    ``h // (H // H_kv)`` (``repeat_interleave``, SDPA's ``enable_gqa`` semantics)."""
    groups = num_heads // t.shape[1]
    return t if groups == 1 else t.repeat_interleave(groups, dim=1)


def capped(s: torch.Tensor, softcap: float | None) -> torch.Tensor:
    """Logit soft-capping (Gemma 2, flash-attention's ``softcap``): ``cap * tanh(s / cap)``,
    applied to the scaled logits before any mask or bias; None or 0: none."""
    return s if not softcap else softcap * torch.tanh(s / softcap)


def with_sinks(
    s: torch.Tensor, v: torch.Tensor, m: torch.Tensor | None, sinks: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Attention sinks (gpt-oss): a logit per query head that joins every row's softmax
    denominator and carries no value. As one more key, always allowed, whose value is zero:
    ``s`` gains a column (the sink's logit), ``v`` a zero row, the mask an allowed column."""
    if sinks is None:
        return s, v, m
    b, h, lq, _ = s.shape  # v has its H heads here (after expand_kv)
    column = sinks.to(s).view(1, h, 1, 1).expand(b, h, lq, 1)
    v = torch.cat([v.expand(b, *v.shape[1:]), v.new_zeros(b, h, 1, v.shape[-1])], -2)
    if m is not None:
        m = torch.cat([m.expand(b, h, lq, m.shape[-1]), m.new_ones(b, h, lq, 1)], -1)
    return torch.cat([s, column], -1), v, m


def guarded_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
    compute_dtype: torch.dtype,
    bias: torch.Tensor | None = None,
    softcap: float | None = None,
    sinks: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax attention over allowed keys; rows with no allowed key give exactly zero (also
    with sinks, whose value is zero).

    No ``-inf`` is ever formed, so every intermediate stays finite for finite inputs and the
    backward pass gives exactly zero (not NaN) to and through the empty rows.
    """
    h = q.shape[1]
    qc, kc, vc = q.to(compute_dtype), expand_kv(k.to(compute_dtype), h), expand_kv(v.to(compute_dtype), h)
    s = capped(torch.einsum("bhid,bhjd->bhij", qc, kc) * scale, softcap)
    if bias is not None:
        s = s + bias.to(compute_dtype)
    s, vc, mask = with_sinks(s, vc, mask, None if sinks is None else sinks.to(compute_dtype))
    if mask is None:
        p = torch.softmax(s, dim=-1)
    else:
        m = mask.to(device=s.device).expand(s.shape)
        with torch.no_grad():  # softmax is shift-invariant: the row maximum is a constant
            shift = torch.where(m, s, torch.finfo(compute_dtype).min).amax(-1, keepdim=True)
            shift = torch.where(m.any(-1, keepdim=True), shift, 0.0)
        e = torch.exp(torch.where(m, s - shift, 0.0)) * m
        denom = e.sum(-1, keepdim=True)
        p = e / torch.where(denom > 0, denom, 1.0)
    return torch.einsum("bhij,bhje->bhie", p, vc)


def plain_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
    bias: torch.Tensor | None = None,
    softcap: float | None = None,
    sinks: torch.Tensor | None = None,
) -> torch.Tensor:
    """The plain implementation in the inputs' dtype T, as the tolerance model counts it: each
    stage (scores, weights, output) accumulated in float32 (float64 for float64 inputs) and
    rounded once to T; its backward rounds each gradient to T the same way."""
    dtype = q.dtype
    acc = torch.float64 if dtype == torch.float64 else torch.float32

    def stage(t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype).to(acc)

    h = q.shape[1]
    qa, ka, va = q.to(acc), expand_kv(k.to(acc), h), expand_kv(v.to(acc), h)
    s = stage(capped(stage(torch.einsum("bhid,bhjd->bhij", qa, ka) * scale), softcap))
    s = s if bias is None else stage(s + bias.to(acc))
    s, va, mask = with_sinks(s, va, mask, None if sinks is None else sinks.to(acc))
    if mask is None:
        p = stage(torch.softmax(s, dim=-1))
    else:
        m = mask.to(device=s.device).expand(s.shape)
        with torch.no_grad():
            shift = torch.where(m, s, torch.finfo(acc).min).amax(-1, keepdim=True)
            shift = torch.where(m.any(-1, keepdim=True), shift, 0.0)
        e = torch.exp(torch.where(m, s - shift, 0.0)) * m
        denom = e.sum(-1, keepdim=True)
        p = stage(e / torch.where(denom > 0, denom, 1.0))
    return torch.einsum("bhij,bhje->bhie", p, va).to(dtype)
