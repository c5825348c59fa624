"""Known-bad kernels in the default dialect, ``fn(q, k, v, mask) -> out`` with mask True = may
attend: each has one realistic defect at the edges, and declares the property that catches it
(and, for a finite defect, the dtypes and logit scales where it shows).

Einstein notation: b batch, h heads, i query, j key, d head dim, e value dim.
"""

from __future__ import annotations

from typing import Any

import torch

from xattn_ref.zoo.known_bad._registry import FiniteDefect, known_bad

_ALL = ("float64", "float32", "float16", "bfloat16")
_HALF = ("float16", "bfloat16")


def _scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    scores: torch.Tensor = torch.einsum("bhid,bhjd->bhij", q, k)
    return scores * float(q.shape[-1] ** -0.5)


def _pv(p: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    out: torch.Tensor = torch.einsum("bhij,bhje->bhie", p, v)
    return out


@known_bad("finite_output")
def neg_inf_softmax(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """The plain ``-inf`` fill: a row with no allowed key is ``softmax([-inf, ...])`` = NaN
    (x-transformers 1.26 with an all-padding ``context_mask``)."""
    s = _scores(q, k)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return _pv(s.softmax(-1), v)


@known_bad("empty_rows_zero")
def finfo_min_fill(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """A finite ``finfo.min`` fill: no NaN, but an empty row averages the padding."""
    s = _scores(q, k)
    if mask is not None:
        s = s.masked_fill(~mask, torch.finfo(s.dtype).min)
    return _pv(s.softmax(-1), v)


@known_bad("finite_grad")
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


@known_bad("finite_grad")
def minus_1e9_fill(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """An additive ``-1e9`` bias and an explicit zero for empty rows: ``-1e9`` is ``-inf`` in
    float16, so there the backward pass of an empty row is NaN; in float64, rows whose logits lie
    below -1e9 give the padding their weight (as ``finite_initial_max``'s -5e4 does)."""
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


@known_bad("finite_output")
def unguarded_long_context(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """Guarded for short contexts; the "fast path" for more than 32 keys forgets the guard."""
    if k.shape[2] > 32:
        return neg_inf_softmax(q, k, v, mask)
    return _guarded(q, k, v, mask)


@known_bad("padding_invariance")
def single_key_fast_path(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """With one key the softmax is 1, so the "fast path" returns v and ignores the mask: an
    empty row (its only key is padding) returns the padding's value."""
    if k.shape[2] == 1:
        return v.expand(q.shape[0], q.shape[1], q.shape[2], v.shape[-1]).clone()
    return _guarded(q, k, v, mask)


@known_bad("no_input_mutation")
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


@known_bad("batch_independence")
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


@known_bad("compaction_equivalence")
def wrong_scale_without_mask(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """The ``mask=None`` fast path scales by ``1/D`` instead of ``1/sqrt(D)``."""
    if mask is None:
        s = torch.einsum("bhid,bhjd->bhij", q, k) / q.shape[-1]
        return _pv(s.softmax(-1), v)
    return _guarded(q, k, v, mask)


@known_bad("dtype_consistency")
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


@known_bad("reference_agreement", finite=FiniteDefect(_ALL, (1.0, 10.0, 100.0)))
def first_tile_only(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """Processes the first tile of 4 queries only: the output rows after it are left at zero."""
    out = _guarded(q, k, v, mask)
    rows = torch.arange(q.shape[2], device=q.device).view(-1, 1) >= 4
    return out.masked_fill(rows, 0.0)


@known_bad("reference_agreement", finite=FiniteDefect(_ALL, (1.0, 10.0, 100.0)))
def ignores_qk(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Uniform weights over the allowed keys: the mean of the values, whatever q and k say."""
    return _guarded_from_scores(_scores(q, k) * 0.0, v, mask)


# rows of 128 keys or more: at logit std 10 in float16 one key takes most of a short row's weight,
# and the drift of a row of a few dozen keys stays within the budget in some seeds' draws
@known_bad(
    "reference_agreement",
    finite=FiniteDefect(_HALF, (1.0, 10.0), {"value_means": [8.0], "min_kv_len": 128}),
)
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


@known_bad("reference_agreement", finite=FiniteDefect(_HALF, (1.0, 10.0), {"value_means": [8.0]}))
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


@known_bad("reference_agreement", finite=FiniteDefect(_HALF, (1.0, 10.0, 100.0)))
def half_logsumexp(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """flash-attention's backward with the logsumexp kept in the input dtype, not float32: in
    float16 and bfloat16 every recomputed weight of a row is off by the same factor, which
    normalization no longer cancels (``targets.flash_backward`` with ``lse_dtype=q.dtype``)."""
    from xattn_ref.zoo.kernels import flash_backward

    return flash_backward(q, k, v, mask, lse_dtype=q.dtype)


@known_bad("reference_agreement", finite=FiniteDefect(_ALL, (1.0, 10.0)))
def dk_doubled(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """A custom backward whose dk is twice what it should be."""
    return _WrongGradient.apply(q, k, v, mask, "dk_doubled")  # type: ignore[no-any-return, no-untyped-call]


@known_bad("reference_agreement", finite=FiniteDefect(_ALL, (1.0, 10.0)))
def dq_unscaled(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """A custom backward that forgets the softmax scale ``1/sqrt(D)`` in dq."""
    return _WrongGradient.apply(q, k, v, mask, "dq_unscaled")  # type: ignore[no-any-return, no-untyped-call]


@known_bad("reference_agreement", finite=FiniteDefect(_ALL, (1.0, 10.0, 100.0)))
def dv_heads_reversed(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """A custom backward that writes dv with its heads in reverse order (a transposed layout)."""
    return _WrongGradient.apply(q, k, v, mask, "dv_heads_reversed")  # type: ignore[no-any-return, no-untyped-call]


@known_bad("reference_agreement", finite=FiniteDefect(("bfloat16",), (1.0, 10.0)))
def wrong_scale_in_bfloat16(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """The bfloat16 path scales the scores by ``1/D`` instead of ``1/sqrt(D)``."""
    if q.dtype == torch.bfloat16:
        return _guarded(q / q.shape[-1] ** 0.5, k, v, mask)
    return _guarded(q, k, v, mask)


@known_bad("empty_rows_zero", finite=FiniteDefect(_ALL, (1.0, 10.0, 100.0)))
def minus_1e4_fill(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """An additive ``-1e4`` for masked keys instead of ``-inf``: finite everywhere, but a row with
    no allowed key averages its padding."""
    s = _scores(q, k)
    if mask is not None:
        s = s + (~mask).to(s.dtype) * -1e4
    return _pv(s.softmax(-1), v)


@known_bad("finite_output")
def finite_initial_max(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """An online softmax whose running maximum starts at -5e4, not -inf (flashinfer#4267): empty
    rows are guarded by the mask, but a row whose allowed logits all lie far below -5e4 has every
    weight underflow to 0, and ``0 / 0`` is NaN."""
    s = _scores(q, k)
    allowed = torch.ones_like(s, dtype=torch.bool) if mask is None else mask.expand(s.shape)
    start = torch.full_like(s[..., :1], -5e4)
    m = torch.maximum(torch.where(allowed, s, -torch.inf).amax(-1, keepdim=True), start)
    e = torch.exp(torch.where(allowed, s - m, -torch.inf))
    some = allowed.any(-1, keepdim=True)  # the guard for rows with no allowed key: exact zeros
    return _pv(e / torch.where(some, e.sum(-1, keepdim=True), 1.0), v)


@known_bad(
    "reference_agreement",
    finite=FiniteDefect(("float64", "float32"), (1.0, 10.0, 100.0), {"logit_shifts": [0.0, -20000.0]}),
)
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


@known_bad("finite_output")
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


def _as_if_contiguous(t: torch.Tensor) -> torch.Tensor:
    """What a raw pointer reads: ``t``'s storage from its offset, with contiguous strides."""
    strides: list[int] = []
    step = 1
    for size in reversed(t.shape):
        strides.insert(0, step)
        step *= size
    return t.as_strided(t.shape, strides, t.storage_offset())


@known_bad("reference_agreement")
def stride_ignoring_kernel(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """A kernel that reads q, k and v as if contiguous (a C++ or Triton kernel handed a data
    pointer and the shape, or a ``.view`` on a transposed tensor): right on contiguous inputs,
    wrong on the transposed views and fused-projection slices real callers pass."""
    q, k, v = (_as_if_contiguous(t) for t in (q, k, v))
    s = _scores(q, k)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    p = s.softmax(-1).nan_to_num(0.0)
    return _pv(p, v)
