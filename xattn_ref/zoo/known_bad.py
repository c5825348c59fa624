"""Known-bad attention kernels: each has one realistic defect at the edges.

They exist to prove the suite can fail: the meta-tests assert that each one is caught, and by
which property (``CAUGHT_BY``). They are kernel-kind targets, ``fn(q, k, v, mask) -> out``,
with mask True = may attend; use them to check that your own gate catches what it should::

    xattn-check xattn_ref.zoo.known_bad:neg_inf_softmax      # exits 1, finite_output fails

Einstein notation: b batch, h heads, i query, j key, d head dim, e value dim.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

import torch

__all__ = [
    "forgets_query_padding",
    "pooled_with_padding_layer",
    "hf_wrong_gqa",
    "varlen_neg_inf",
    "varlen_reads_next_key",
    "gqa_repeat_heads",
    "causal_top_left_kernel",
    "sentinel_as_allowed",
    "bias_dropped",
    "scale_ignored",
    "forward_only_neg_inf",
    "padding_on_queries",
    "hf_eager_attention",
    "KNOWN_BAD_DIALECTS",
    "CAUGHT_BY",
    "FINITE_DEFECTS",
    "FiniteDefect",
    "KNOWN_BAD",
    "KNOWN_BAD_LAYERS",
    "LAYER_CAUGHT_BY",
    "batch_global_max",
    "finfo_min_additive",
    "finfo_min_fill",
    "half_accumulator",
    "half_logsumexp",
    "half_precision_math",
    "half_softmax",
    "minus_1e9_fill",
    "mutates_mask",
    "neg_inf_softmax",
    "sentinel_empty_rows",
    "single_key_fast_path",
    "unguarded_long_context",
    "wrong_scale_without_mask",
    "zero_after_neg_inf",
]


def _scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    scores: torch.Tensor = torch.einsum("bhid,bhjd->bhij", q, k)
    return scores * float(q.shape[-1] ** -0.5)


def _pv(p: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    out: torch.Tensor = torch.einsum("bhij,bhje->bhie", p, v)
    return out


def neg_inf_softmax(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """The plain ``-inf`` fill: a row with no allowed key is ``softmax([-inf, ...])`` = NaN
    (x-transformers 1.26 with an all-padding ``context_mask``)."""
    s = _scores(q, k)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return _pv(s.softmax(-1), v)


def finfo_min_fill(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """A finite ``finfo.min`` fill: no NaN, but an empty row averages the padding."""
    s = _scores(q, k)
    if mask is not None:
        s = s.masked_fill(~mask, torch.finfo(s.dtype).min)
    return _pv(s.softmax(-1), v)


def zero_after_neg_inf(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """``-inf`` softmax, then empty rows overwritten with zeros: the forward pass is right, the
    backward pass is NaN (``where`` does not stop NaN in the softmax's own backward)."""
    s = _scores(q, k)
    if mask is None:
        return _pv(s.softmax(-1), v)
    out = _pv(s.masked_fill(~mask, float("-inf")).softmax(-1), v)
    empty = ~mask.any(-1, keepdim=True)
    return torch.where(empty, torch.zeros_like(out), out)


def minus_1e9_fill(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """An additive ``-1e9`` bias and an explicit zero for empty rows: correct in float32 and
    float64, but ``-1e9`` is ``-inf`` in float16, so there the backward pass of an empty row is
    NaN."""
    s = _scores(q, k)
    if mask is None:
        return _pv(s.softmax(-1), v)
    bias = (~mask).to(s.dtype) * -1e9  # in float16 this is -inf
    out = _pv((s + bias).softmax(-1), v)
    return out.masked_fill(~mask.any(-1, keepdim=True), 0.0)


def _guarded(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """A correct kernel: empty rows attend to one key, then are zeroed."""
    return _guarded_from_scores(_scores(q, k), v, mask)


def _guarded_weights(s: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The softmax of the scores ``s`` over the allowed keys, and the empty rows (None without a
    mask): an empty row attends to its first key, for its output to be zeroed afterwards."""
    if mask is None:
        return s.softmax(-1), None
    empty = ~mask.any(-1, keepdim=True)
    safe = mask | (empty & (torch.arange(s.shape[-1], device=mask.device) == 0))
    return s.masked_fill(~safe, float("-inf")).softmax(-1), empty


def unguarded_long_context(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """Guarded for short contexts; the "fast path" for more than 32 keys forgets the guard."""
    if k.shape[2] > 32:
        return neg_inf_softmax(q, k, v, mask)
    return _guarded(q, k, v, mask)


def single_key_fast_path(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """With one key the softmax is 1, so the "fast path" returns v and ignores the mask: an
    empty row (its only key is padding) returns the padding's value."""
    if k.shape[2] == 1:
        return v.expand(q.shape[0], q.shape[1], q.shape[2], v.shape[-1]).clone()
    return _guarded(q, k, v, mask)


def mutates_mask(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """A guard that writes into the caller's mask: it lets empty rows see key 0 in place, then
    zeroes them. Every output is right; the caller's mask is not."""
    if mask is None:
        return _pv(_scores(q, k).softmax(-1), v)
    empty = ~mask.any(-1, keepdim=True)
    mask[..., :1] |= empty  # the defect: in place, on the caller's tensor
    out = _pv(_scores(q, k).masked_fill(~mask, float("-inf")).softmax(-1), v)
    return out.masked_fill(empty, 0.0)


def batch_global_max(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """Stabilises the softmax with the maximum over the whole batch instead of each row: a batch
    element with large logits makes ``exp`` underflow in the others."""
    s = _scores(q, k)
    m = torch.ones_like(s, dtype=torch.bool) if mask is None else mask.expand(s.shape)
    shift = torch.where(m, s, torch.finfo(s.dtype).min).amax().detach()
    e = torch.exp(torch.where(m, s - shift, 0.0)) * m
    denom = e.sum(-1, keepdim=True)
    return _pv(e / torch.where(denom > 0, denom, 1.0), v)


def wrong_scale_without_mask(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """The ``mask=None`` fast path scales by ``1/D`` instead of ``1/sqrt(D)``."""
    if mask is None:
        s = torch.einsum("bhid,bhjd->bhij", q, k) / q.shape[-1]
        return _pv(s.softmax(-1), v)
    return _guarded(q, k, v, mask)


def half_precision_math(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """A "fast" path that does the math in float16 whenever the input is not float64: exact in
    float64, but float32 and bfloat16 inputs lose precision (and range) beyond what their own
    dtype loses."""
    if q.dtype == torch.float64:
        return _guarded(q, k, v, mask)
    h = torch.float16
    return _guarded(q.to(h), k.to(h), v.to(h), mask).to(q.dtype)


# --- finite defects: no NaN, no inf, only wrong values (caught by the tolerance model) --------


def first_tile_only(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """Processes the first tile of 4 queries only: the output rows after it are left at zero."""
    out = _guarded(q, k, v, mask)
    rows = torch.arange(q.shape[2], device=q.device).view(-1, 1) >= 4
    return out.masked_fill(rows, 0.0)


def ignores_qk(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Uniform weights over the allowed keys: the mean of the values, whatever q and k say."""
    return _guarded_from_scores(_scores(q, k) * 0.0, v, mask)


def half_accumulator(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """``P v`` accumulated key by key in the inputs' dtype: a tiled kernel whose output accumulator
    is not float32 (a Triton kernel with a bfloat16 accumulator; flash-attention's 2x rule exists
    for it). Correct in float64 and float32; in float16 and bfloat16 each addition rounds to 11 or
    8 bits."""
    work = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    p, empty = _guarded_weights(_scores(q.to(work), k.to(work)), mask)
    p = p.to(q.dtype)
    out = torch.zeros(*p.shape[:-1], v.shape[-1], dtype=q.dtype, device=q.device)
    for j in range(k.shape[2]):
        out = out + p[..., j : j + 1] * v[:, :, j : j + 1, :]
    return out if empty is None else out.masked_fill(empty, 0.0)


def half_softmax(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """The softmax in the inputs' dtype, its row sum accumulated key by key in that dtype (no
    float32 accumulator): correct in float64 and float32; in float16 and bfloat16 the sum
    stagnates once it is large next to its terms, and every weight is off by as much."""
    s = _scores(q, k)
    allowed = torch.ones_like(s, dtype=torch.bool) if mask is None else mask.expand(s.shape)
    shift = torch.where(allowed, s, float("-inf")).amax(-1, keepdim=True)
    shift = torch.where(allowed.any(-1, keepdim=True), shift, 0.0)
    e = torch.exp(torch.where(allowed, s - shift, 0.0)) * allowed
    total = torch.zeros_like(e[..., :1])
    for j in range(e.shape[-1]):
        total = total + e[..., j : j + 1]
    return _pv(e / torch.where(total > 0, total, 1.0), v)


def _guarded_from_scores(s: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    p, empty = _guarded_weights(s, mask)
    out = _pv(p, v)
    return out if empty is None else out.masked_fill(empty, 0.0)


class _WrongGradient(torch.autograd.Function):
    """A correct forward with a hand-written backward that gets one gradient wrong."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Any, defect: str) -> Any:
        ctx.save_for_backward(q, k, v)
        ctx.mask, ctx.defect = mask, defect
        return _guarded(q, k, v, mask)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> Any:
        q, k, v = (t.detach().requires_grad_(True) for t in ctx.saved_tensors)
        with torch.enable_grad():
            out = _guarded(q, k, v, ctx.mask)
            dq, dk, dv = torch.autograd.grad(out, (q, k, v), g)
        if ctx.defect == "dk_doubled":
            dk = 2 * dk
        elif ctx.defect == "dq_unscaled":
            dq = dq * q.shape[-1] ** 0.5  # the 1/sqrt(D) of the scores forgotten in dq
        elif ctx.defect == "dv_heads_reversed":
            dv = dv.flip(1)
        return dq, dk, dv, None, None


def half_logsumexp(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """flash-attention's backward with the logsumexp kept in the input dtype, not float32: in
    float16 and bfloat16 every recomputed weight of a row is off by the same factor, which
    normalization no longer cancels (``targets.flash_backward`` with ``lse_dtype=q.dtype``)."""
    from xattn_ref.zoo.kernels import flash_backward

    return flash_backward(q, k, v, mask, lse_dtype=q.dtype)


def dk_doubled(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """A custom backward whose dk is twice what it should be."""
    return _WrongGradient.apply(q, k, v, mask, "dk_doubled")  # type: ignore[no-any-return, no-untyped-call]


def dq_unscaled(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """A custom backward that forgets the softmax scale ``1/sqrt(D)`` in dq."""
    return _WrongGradient.apply(q, k, v, mask, "dq_unscaled")  # type: ignore[no-any-return, no-untyped-call]


def dv_heads_reversed(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """A custom backward that writes dv with its heads in reverse order (a transposed layout)."""
    return _WrongGradient.apply(q, k, v, mask, "dv_heads_reversed")  # type: ignore[no-any-return, no-untyped-call]


def wrong_scale_in_bfloat16(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """The bfloat16 path scales the scores by ``1/D`` instead of ``1/sqrt(D)``."""
    if q.dtype == torch.bfloat16:
        return _guarded(q / q.shape[-1] ** 0.5, k, v, mask)
    return _guarded(q, k, v, mask)


def minus_1e4_fill(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """An additive ``-1e4`` for masked keys instead of ``-inf``: finite everywhere, but a row with
    no allowed key averages its padding."""
    s = _scores(q, k)
    if mask is not None:
        s = s + (~mask).to(s.dtype) * -1e4
    return _pv(s.softmax(-1), v)


def sentinel_empty_rows(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """A ``-1e4`` sentinel for masked keys, and a row whose largest logit is at or below it taken
    for an empty row and zeroed: a valid row whose logits are all below ``-1e4`` is zeroed too
    (flashinfer's ``-5e4`` sentinel did this)."""
    s = _scores(q, k)
    if mask is not None:
        s = s.masked_fill(~mask, -1e4)
    out = _pv(s.softmax(-1), v)
    return out.masked_fill(s.amax(-1, keepdim=True) <= -1e4, 0.0)


def finfo_min_additive(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """Hugging Face eager attention's pattern: ``finfo(dtype).min`` added to the logits of masked
    keys. In float16 ``-65504 + logit`` overflows to ``-inf`` once the logit is below -16, so an
    all-padding row with such logits is NaN (in every dtype, such a row averages its padding)."""
    s = _scores(q, k)
    if mask is not None:
        s = s + (~mask).to(s.dtype) * torch.finfo(s.dtype).min
    return _pv(s.softmax(-1), v)


#: name -> kernel.
KNOWN_BAD = {
    f.__name__: f
    for f in (
        neg_inf_softmax,
        finfo_min_fill,
        zero_after_neg_inf,
        minus_1e9_fill,
        unguarded_long_context,
        single_key_fast_path,
        mutates_mask,
        batch_global_max,
        wrong_scale_without_mask,
        half_precision_math,
        first_tile_only,
        ignores_qk,
        dk_doubled,
        dq_unscaled,
        half_logsumexp,
        dv_heads_reversed,
        wrong_scale_in_bfloat16,
        half_accumulator,
        half_softmax,
        minus_1e4_fill,
        finfo_min_additive,
        sentinel_empty_rows,
    )
}

#: name -> the property designed to catch it (others may catch it too).
CAUGHT_BY = {
    "neg_inf_softmax": "finite_output",
    "finfo_min_fill": "empty_rows_zero",
    "zero_after_neg_inf": "finite_grad",
    "minus_1e9_fill": "finite_grad",
    "unguarded_long_context": "finite_output",
    "single_key_fast_path": "padding_invariance",
    "mutates_mask": "no_input_mutation",
    "batch_global_max": "batch_independence",
    "wrong_scale_without_mask": "compaction_equivalence",
    "half_precision_math": "dtype_consistency",
    "first_tile_only": "reference_agreement",
    "ignores_qk": "reference_agreement",
    "dk_doubled": "reference_agreement",
    "dq_unscaled": "reference_agreement",
    "half_logsumexp": "reference_agreement",
    "dv_heads_reversed": "reference_agreement",
    "wrong_scale_in_bfloat16": "reference_agreement",
    "half_accumulator": "reference_agreement",
    "half_softmax": "reference_agreement",
    "minus_1e4_fill": "empty_rows_zero",
    "finfo_min_additive": "finite_output",
    "sentinel_empty_rows": "reference_agreement",
}


class FiniteDefect(NamedTuple):
    """Where a finite defect exists: its dtypes, the logit standard deviations at which it shows,
    and the inputs it needs beyond the defaults (keyword arguments of ``attention_cases``)."""

    dtypes: tuple[str, ...]
    stds: tuple[float, ...]
    inputs: Mapping[str, Any] = MappingProxyType({})


_ALL = ("float64", "float32", "float16", "bfloat16")
_HALF = ("float16", "bfloat16")

#: Finite defects: name -> where it exists (each a function of this module and in
#: ``KNOWN_BAD``). At std 100 the weights of a row are one-hot: dS, so
#: dq and dk, vanish, a different scale does not change the output, and a sum over the keys has
#: one term. A sum accumulated in half precision drifts in proportion to its size, so it shows
#: on values far from zero mean (``value_means``), where the weights' own rounding is small next
#: to it; the defaults draw such values in two batch elements of five. A sentinel mistaken for an
#: empty row needs rows whose logits are all below it (the defaults: one draw in twelve; not in
#: float16 and bfloat16, where shifts are capped at 30: strategies.HALF_SHIFT_CAP).
FINITE_DEFECTS: dict[str, FiniteDefect] = {
    "first_tile_only": FiniteDefect(_ALL, (1.0, 10.0, 100.0)),
    "ignores_qk": FiniteDefect(_ALL, (1.0, 10.0, 100.0)),
    "dk_doubled": FiniteDefect(_ALL, (1.0, 10.0)),
    "dq_unscaled": FiniteDefect(_ALL, (1.0, 10.0)),
    "dv_heads_reversed": FiniteDefect(_ALL, (1.0, 10.0, 100.0)),
    "wrong_scale_in_bfloat16": FiniteDefect(("bfloat16",), (1.0, 10.0)),
    "half_accumulator": FiniteDefect(_HALF, (1.0, 10.0), {"value_means": [8.0]}),
    "half_softmax": FiniteDefect(_HALF, (1.0, 10.0), {"value_means": [8.0]}),
    "half_logsumexp": FiniteDefect(_HALF, (1.0, 10.0, 100.0)),
    "minus_1e4_fill": FiniteDefect(_ALL, (1.0, 10.0, 100.0)),
    "sentinel_empty_rows": FiniteDefect(
        ("float64", "float32"), (1.0, 10.0, 100.0), {"logit_shifts": [0.0, -20000.0]}
    ),
}


# --- known-bad kernels in other dialects (xattn_ref.dialects): run each with its options -------


def gqa_repeat_heads(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """Grouped-query attention with the wrong head mapping: k and v expanded with ``repeat``
    (query head h reads kv head ``h % H_kv``) instead of ``repeat_interleave`` (``h // G``)."""
    groups = q.shape[1] // k.shape[1]
    return _guarded(q, k.repeat(1, groups, 1, 1), v.repeat(1, groups, 1, 1), mask)


def causal_top_left_kernel(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, is_causal: bool = False
) -> torch.Tensor:
    """SDPA's ``is_causal`` (top-left aligned) in a kernel that documents bottom-right alignment
    (flash-attention >= 2.1): when Lq != Lk every query sees the wrong keys."""
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, mask, is_causal=is_causal)


def _allowed_and_bias(mask: torch.Tensor | None, masked_below: float) -> tuple[Any, Any]:
    if mask is None:
        return None, None
    allowed = mask > masked_below
    return allowed, torch.where(allowed, mask, 0.0)


def sentinel_as_allowed(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """Reads a float mask as "every entry above ``-inf`` is allowed" (as the guard once did):
    ``finfo.min`` sentinels count as allowed keys with a huge negative bias, so a row whose keys
    are all padding averages the padding instead of giving zero."""
    allowed, bias = _allowed_and_bias(mask, float("-inf"))
    s = _scores(q, k) if bias is None else _scores(q, k) + bias
    return _guarded_from_scores(s, v, allowed)


def bias_dropped(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """Turns an additive float mask into a bool one (``mask > -inf``) and drops its finite
    biases (ALiBi, relative positions) on the way."""
    allowed, _ = _allowed_and_bias(mask, float("-inf"))
    return _guarded(q, k, v, allowed)


def scale_ignored(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float | None = None
) -> torch.Tensor:
    """Takes ``scale=`` and ignores it: the scores are always scaled by ``1/sqrt(D)``."""
    return _guarded(q, k, v, mask)


def forward_only_neg_inf(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """An inference kernel (no autograd) with the plain ``-inf`` fill: NaN for empty rows."""
    with torch.no_grad():
        return neg_inf_softmax(q, k, v, mask)


def padding_on_queries(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """A self-attention kernel that applies its ``(B, L)`` padding mask to the queries instead of
    the keys: padded queries are zeroed, real queries attend to the padding."""
    if mask is None:
        return _guarded(q, k, v, None)
    rows = mask[:, None, :, None].expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    return _guarded(q, k, v, rows)


def forgets_query_padding(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """An encoder kernel documented to pad queries and keys with its ``(B, L)`` mask that pads the
    keys only: padded queries attend to the real tokens instead of giving zeros."""
    if mask is None:
        return _guarded(q, k, v, None)
    allowed = mask[:, None, None, :].expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    return _guarded(q, k, v, allowed)


def hf_eager_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float | None = None
) -> torch.Tensor:
    """Hugging Face's eager attention, reduced: scores in the inputs' dtype, plus the
    ``finfo(dtype).min`` mask, softmax in float32. Its documented empty-row behaviour is the mean
    of the values (fine under ``--empty-rows finite``), but in float16 ``-65504 + logit``
    overflows to ``-inf`` once a padded logit is below -16: an all-padding row is then NaN."""
    s = torch.einsum("bhid,bhjd->bhij", q, k) * (q.shape[-1] ** -0.5 if scale is None else scale)
    if mask is not None:
        s = s + mask
    return _pv(s.softmax(-1, dtype=torch.float32).to(q.dtype), v)


def varlen_neg_inf(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
) -> torch.Tensor:
    """A packed kernel as one block-diagonal ``-inf`` softmax over all sequences: a sequence with
    no key (zero length) has a row of ``-inf`` and gives NaN (flash-attention#1537's class)."""
    seq_q = torch.repeat_interleave(torch.arange(cu_seqlens_q.shape[0] - 1), torch.diff(cu_seqlens_q).long())
    seq_k = torch.repeat_interleave(torch.arange(cu_seqlens_k.shape[0] - 1), torch.diff(cu_seqlens_k).long())
    groups = q.shape[1] // k.shape[1]
    kk, vv = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    s = torch.einsum("ihd,jhd->hij", q, kk) * q.shape[-1] ** -0.5
    s = s.masked_fill(seq_q[:, None] != seq_k[None, :], float("-inf"))
    return torch.einsum("hij,jhe->ihe", s.softmax(-1), vv)


def varlen_reads_next_key(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
) -> torch.Tensor:
    """Off by one at the end of each key sequence: every sequence also attends to the first key of
    the next one, so it leaks into its neighbour (and a zero-length sequence is not empty)."""
    from xattn_ref.zoo.kernels import varlen_reference_kernel

    ends = cu_seqlens_k.clone()
    ends[1:] = torch.clamp(ends[1:] + 1, max=k.shape[0])
    starts = cu_seqlens_k[:-1]
    pieces_k = [k[int(a) : int(e)] for a, e in zip(starts, ends[1:])]
    pieces_v = [v[int(a) : int(e)] for a, e in zip(starts, ends[1:])]
    lens = torch.tensor([0] + [p.shape[0] for p in pieces_k]).cumsum(0).to(cu_seqlens_k)
    empty = k.new_zeros(0, *k.shape[1:])
    kk = torch.cat(pieces_k) if pieces_k else empty
    vv = torch.cat(pieces_v) if pieces_v else v.new_zeros(0, *v.shape[1:])
    return varlen_reference_kernel(q, kk, vv, cu_seqlens_q, lens, max_seqlen_q, max_seqlen_k + 1)


def hf_wrong_gqa(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """A Hugging Face-style attention function whose ``repeat_kv`` uses ``repeat`` (query head h
    reads kv head ``h % H_kv``) instead of ``h // num_key_value_groups``."""
    n_rep = int(module.num_key_value_groups)  # type: ignore[arg-type]
    key, value = key.repeat(1, n_rep, 1, 1), value.repeat(1, n_rep, 1, 1)
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attention_mask, scale=scaling)
    return out.transpose(1, 2), None


#: Known-bad kernels in other dialects: name -> (kernel, its dialect options, the property
#: designed to catch it).
KNOWN_BAD_DIALECTS: dict[str, tuple[Any, dict[str, Any], str]] = {
    "gqa_repeat_heads": (gqa_repeat_heads, {"heads": "gqa"}, "reference_agreement"),
    "causal_top_left_kernel": (
        causal_top_left_kernel,
        {"mask": "none", "causal": "bottom_right"},
        "reference_agreement",
    ),
    "sentinel_as_allowed": (sentinel_as_allowed, {"mask": "sentinel"}, "empty_rows_zero"),
    "bias_dropped": (bias_dropped, {"mask": "additive", "bias": True}, "reference_agreement"),
    "scale_ignored": (scale_ignored, {"scale": True}, "reference_agreement"),
    "forward_only_neg_inf": (forward_only_neg_inf, {"forward_only": True}, "finite_output"),
    "padding_on_queries": (
        padding_on_queries,
        {"key_padding": True, "self_attention": True},
        "padding_invariance",
    ),
    "forgets_query_padding": (
        forgets_query_padding,
        {"key_padding": True, "self_attention": True, "query_padding": True},
        "empty_rows_zero",
    ),
    "hf_wrong_gqa": (hf_wrong_gqa, {"kind": "hf", "mask": "bool"}, "reference_agreement"),
    "varlen_neg_inf": (varlen_neg_inf, {"kind": "varlen"}, "finite_output"),
    "varlen_reads_next_key": (varlen_reads_next_key, {"kind": "varlen"}, "batch_independence"),
    "hf_eager_attention": (
        hf_eager_attention,
        {"mask": "sentinel", "empty_rows": "finite", "scale": True},
        "finite_output",
    ),
}


# --- known-bad layers: fn(x, context, context_mask), context_mask True = real token ----------


def _layer(kernel: Any) -> torch.nn.Module:
    from xattn_ref.zoo.adapters import cross_attention_layer

    return cross_attention_layer(kernel, dim=16)


class _ZeroesPaddingInPlace(torch.nn.Module):
    """Zeroes the caller's padded context in place before attending ("cleaning" the input)."""

    def __init__(self) -> None:
        super().__init__()
        from xattn_ref.zoo.adapters import cross_attention_layer

        self.inner = cross_attention_layer(dim=16)

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        context.masked_fill_(~context_mask.unsqueeze(-1), 0.0)  # the defect: the caller's tensor
        y: torch.Tensor = self.inner(x, context, context_mask)
        return y


class _MeanPooledContext(torch.nn.Module):
    """Adds the mean of the context over *all* positions, padding included, to every query."""

    def __init__(self) -> None:
        super().__init__()
        from xattn_ref.zoo.adapters import cross_attention_layer

        self.inner = cross_attention_layer(dim=16)

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.inner(x, context, context_mask)
        return y + context.mean(1, keepdim=True) * context_mask.any(-1)[:, None, None]


def finfo_min_fill_layer() -> torch.nn.Module:
    """Cross-attention with :func:`finfo_min_fill`: a fully padded context leaks into y."""
    return _layer(finfo_min_fill)


def neg_inf_softmax_layer() -> torch.nn.Module:
    """Cross-attention with :func:`neg_inf_softmax`: NaN for a fully padded context."""
    return _layer(neg_inf_softmax)


def batch_global_max_layer() -> torch.nn.Module:
    """Cross-attention with :func:`batch_global_max`: batch elements interfere."""
    return _layer(batch_global_max)


def half_precision_math_layer() -> torch.nn.Module:
    """Cross-attention with :func:`half_precision_math`: float32 loses precision."""
    return _layer(half_precision_math)


def zeroes_padding_in_place_layer() -> torch.nn.Module:
    """Writes zeros into the caller's context."""
    return _ZeroesPaddingInPlace()


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


def half_path_wrong_grad_layer() -> torch.nn.Module:
    """Cross-attention that takes a fused kernel for float16 and bfloat16 inputs, as layers pick
    flash kernels for half precision, whose backward doubles dk: y is right in every dtype; the
    gradients of the context and of the key projection are wrong in half precision alone."""
    return _layer(_half_path_dk_doubled)


#: name -> zero-argument factory of a layer (E = 16).
KNOWN_BAD_LAYERS = {
    f.__name__: f
    for f in (
        neg_inf_softmax_layer,
        finfo_min_fill_layer,
        batch_global_max_layer,
        half_precision_math_layer,
        zeroes_padding_in_place_layer,
        mean_pooled_context_layer,
        half_path_wrong_grad_layer,
    )
}

#: name -> the layer property designed to catch it.
LAYER_CAUGHT_BY = {
    "neg_inf_softmax_layer": "finite_output",
    "finfo_min_fill_layer": "padding_invariance",
    "batch_global_max_layer": "batch_independence",
    "half_precision_math_layer": "dtype_consistency",
    "zeroes_padding_in_place_layer": "no_input_mutation",
    "mean_pooled_context_layer": "compaction_equivalence",
    "half_path_wrong_grad_layer": "dtype_consistency",
}
