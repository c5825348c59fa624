"""A grouped-query, bottom-right causal attention kernel with key padding, as a decoder with a KV
cache calls it: q ``(B, H, Lq, D)``, k and v ``(B, H_kv, Lk, D)``; ``padding`` ``(B, 1, 1, Lk)``
bool, True = a real token; the last query sees every real key."""

from __future__ import annotations

import torch


def gqa_causal_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    padding: torch.Tensor | None = None,
    is_causal: bool = True,
) -> torch.Tensor:
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    lq, lk = q.shape[2], k.shape[2]
    allowed = torch.ones(lq, lk, dtype=torch.bool, device=q.device)
    if is_causal:
        allowed = allowed.tril(lk - lq)  # bottom-right aligned
    if padding is not None:
        allowed = allowed & padding
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    empty = ~allowed.any(-1, keepdim=True)
    safe = allowed | (empty & (torch.arange(lk, device=q.device) == 0))  # one key for empty rows
    weights = scores.masked_fill(~safe, float("-inf")).softmax(-1)
    return (weights @ v).masked_fill(empty, 0.0)  # rows with no real key: exactly zero
