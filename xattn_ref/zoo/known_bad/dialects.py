"""Known-bad kernels in other dialects (:class:`xattn_ref.dialects.Dialect`) and kinds (``hf``,
``varlen``): each declares the options it is run with and the property that catches it."""

from __future__ import annotations

from typing import Any

import torch

from xattn_ref.zoo.known_bad._registry import known_bad
from xattn_ref.zoo.known_bad.kernels import _guarded, _guarded_from_scores, _pv, _scores, neg_inf_softmax


@known_bad("reference_agreement", options={"heads": "gqa"})
def gqa_repeat_heads(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """Grouped-query attention with the wrong head mapping: k and v expanded with ``repeat``
    (query head h reads kv head ``h % H_kv``) instead of ``repeat_interleave`` (``h // G``)."""
    groups = q.shape[1] // k.shape[1]
    return _guarded(q, k.repeat(1, groups, 1, 1), v.repeat(1, groups, 1, 1), mask)


@known_bad("reference_agreement", options={"mask": "none", "causal": "bottom_right"})
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


@known_bad("empty_rows_zero", options={"mask": "sentinel"})
def sentinel_as_allowed(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """Reads a float mask as "every entry above ``-inf`` is allowed" (as the guard once did):
    ``finfo.min`` sentinels count as allowed keys with a huge negative bias, so a row whose keys
    are all padding averages the padding instead of giving zero."""
    allowed, bias = _allowed_and_bias(mask, float("-inf"))
    s = _scores(q, k) if bias is None else _scores(q, k) + bias
    return _guarded_from_scores(s, v, allowed)


@known_bad("reference_agreement", options={"mask": "additive", "bias": True})
def bias_dropped(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """Turns an additive float mask into a bool one (``mask > -inf``) and drops its finite
    biases (ALiBi, relative positions) on the way."""
    allowed, _ = _allowed_and_bias(mask, float("-inf"))
    return _guarded(q, k, v, allowed)


@known_bad("reference_agreement", options={"scale": True})
def scale_ignored(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float | None = None
) -> torch.Tensor:
    """Takes ``scale=`` and ignores it: the scores are always scaled by ``1/sqrt(D)``."""
    return _guarded(q, k, v, mask)


@known_bad("finite_output", options={"forward_only": True})
def forward_only_neg_inf(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """An inference kernel (no autograd) with the plain ``-inf`` fill: NaN for empty rows."""
    with torch.no_grad():
        return neg_inf_softmax(q, k, v, mask)


@known_bad("padding_invariance", options={"key_padding": True, "self_attention": True})
def padding_on_queries(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """A self-attention kernel that applies its ``(B, L)`` padding mask to the queries instead of
    the keys: padded queries are zeroed, real queries attend to the padding."""
    if mask is None:
        return _guarded(q, k, v, None)
    rows = mask[:, None, :, None].expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    return _guarded(q, k, v, rows)


@known_bad("empty_rows_zero", options={"key_padding": True, "self_attention": True, "query_padding": True})
def forgets_query_padding(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """An encoder kernel documented to pad queries and keys with its ``(B, L)`` mask that pads the
    keys only: padded queries attend to the real tokens instead of giving zeros."""
    if mask is None:
        return _guarded(q, k, v, None)
    allowed = mask[:, None, None, :].expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    return _guarded(q, k, v, allowed)


@known_bad("finite_output", options={"mask": "sentinel", "empty_rows": "finite", "scale": True})
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


@known_bad("finite_output", options={"kind": "varlen"})
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
    # the sequences only (a tail past cu_seqlens[-1] is no sequence's): the output has cu_seqlens_q[-1] rows
    q, k, v = q[: int(cu_seqlens_q[-1])], k[: int(cu_seqlens_k[-1])], v[: int(cu_seqlens_k[-1])]
    seq_q = torch.repeat_interleave(torch.arange(cu_seqlens_q.shape[0] - 1), torch.diff(cu_seqlens_q).long())
    seq_k = torch.repeat_interleave(torch.arange(cu_seqlens_k.shape[0] - 1), torch.diff(cu_seqlens_k).long())
    groups = q.shape[1] // k.shape[1]
    kk, vv = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    s = torch.einsum("ihd,jhd->hij", q, kk) * q.shape[-1] ** -0.5
    s = s.masked_fill(seq_q[:, None] != seq_k[None, :], float("-inf"))
    return torch.einsum("hij,jhe->ihe", s.softmax(-1), vv)


@known_bad("batch_independence", options={"kind": "varlen"})
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


@known_bad("reference_agreement", options={"window": True})
def window_off_by_one(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    window_size: tuple[int, int] = (-1, -1),
) -> torch.Tensor:
    """A sliding window one key too wide on the left (``j >= i - left - 1``: transformers#39408's
    class): right where the window does not cut the row."""
    from xattn_ref.zoo.kernels import windowed_kernel

    left, right = window_size
    return windowed_kernel(q, k, v, mask, (left + 1 if left >= 0 else left, right))


@known_bad("reference_agreement", options={"softcap": True})
def softcap_after_mask(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    softcap: float = 0.0,
) -> torch.Tensor:
    """Caps the logits after masking them with -inf: ``tanh(-inf) = -1`` turns every masked
    logit into ``-softcap``, so padding takes weight ``e^(-softcap - max)`` (the class of a cap
    applied to the masked scores): right without padding or with a large cap."""
    h = q.shape[1]
    k, v = (t.repeat_interleave(h // t.shape[1], dim=1) for t in (k, v))
    s = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    if softcap:
        s = softcap * torch.tanh(s / softcap)
    return torch.softmax(s.nan_to_num(nan=0.0), dim=-1).nan_to_num(0.0) @ v


@known_bad("reference_agreement", options={"softcap": True})
def softcap_dropped(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    softcap: float = 0.0,
) -> torch.Tensor:
    """Takes ``softcap=`` and ignores it (vllm-metal#665: a backend that drops the cap): right
    for logits far below the cap."""
    from xattn_ref.zoo.kernels import softcap_sinks_kernel

    return softcap_sinks_kernel(q, k, v, mask)


@known_bad("reference_agreement", options={"sinks": True})
def sink_left_out(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    sinks: torch.Tensor | None = None,
) -> torch.Tensor:
    """Takes ``sinks=`` and leaves them out of the softmax's denominator: right only where a
    row's logits dwarf its head's sink."""
    from xattn_ref.zoo.kernels import softcap_sinks_kernel

    return softcap_sinks_kernel(q, k, v, mask)


@known_bad("empty_rows_zero", options={"sinks": True})
def sink_as_a_key(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    sinks: torch.Tensor | None = None,
) -> torch.Tensor:
    """Gives the sink a value: the first key's (a sink implemented as an extra token at position
    0, as StreamingLLM keeps one): a row that allows no key outputs that value, not zero."""
    from xattn_ref.zoo.kernels import softcap_sinks_kernel

    out = softcap_sinks_kernel(q, k, v, mask, sinks=sinks)
    if sinks is None:
        return out
    h = q.shape[1]
    s = q @ k.repeat_interleave(h // k.shape[1], dim=1).transpose(-2, -1) * q.shape[-1] ** -0.5
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    both = torch.cat([s, sinks.view(1, h, 1, 1).expand(*s.shape[:-1], 1)], -1)
    weight = torch.softmax(both, -1)[..., -1:]  # the sink's share of each row
    first = v.repeat_interleave(h // v.shape[1], dim=1)[..., :1, :]
    return out + weight * first


@known_bad("finite_output", options={"kind": "paged"})
def paged_reads_whole_pages(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    seqlens_k: torch.Tensor,
) -> torch.Tensor:
    """Attends to every slot of a sequence's pages, its last page's unused slots included (a
    tile loaded whole and masked by page, not by length: sglang#32477's class): NaN from a
    reused cache's garbage; right when every sequence fills its last page."""
    from xattn_ref.zoo.kernels import paged_attention

    return paged_attention(q, k_cache, v_cache, block_table, seqlens_k, whole_pages=True)


@known_bad("reference_agreement", options={"kind": "paged"})
def paged_top_left(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    seqlens_k: torch.Tensor,
) -> torch.Tensor:
    """Aligns a chunk's causal mask top-left (query i sees keys up to i: SDPA's ``is_causal``,
    pytorch#144858) instead of at the end of the cache: right for one query with one key."""
    from xattn_ref.zoo.kernels import paged_attention

    return paged_attention(q, k_cache, v_cache, block_table, seqlens_k, top_left=True)


@known_bad("reference_agreement", options={"kind": "paged"})
def paged_physical_order(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    seqlens_k: torch.Tensor,
) -> torch.Tensor:
    """Reads a sequence's pages in the order they lie in memory, not the block table's (the
    output depends on where pages lie: pytorch#182593's class): right while pages are allocated
    in order, wrong for a chunk once they are not."""
    from xattn_ref.zoo.kernels import paged_attention

    return paged_attention(q, k_cache, v_cache, block_table, seqlens_k, physical_order=True)


@known_bad("reference_agreement", options={"kind": "paged"})
def paged_assumes_16(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    seqlens_k: torch.Tensor,
) -> torch.Tensor:
    """Takes every page to hold 16 keys (vLLM's default block size), whatever the cache's
    shape says: right for pages of 16 only (flashinfer#3716's class: block sizes off the edge)."""
    from xattn_ref.zoo.kernels import paged_attention

    if k_cache.shape[1] == 16:
        return paged_attention(q, k_cache, v_cache, block_table, seqlens_k)
    # a page of size s read as 16: keys i * 16 + j taken from page i's row j, past its end into
    # the next physical page's
    flat_k, flat_v = k_cache.flatten(0, 1), v_cache.flatten(0, 1)
    size = k_cache.shape[1]
    rows = flat_k.shape[0]
    pad = (-rows) % 16
    k16 = torch.cat([flat_k, flat_k.new_zeros(pad, *flat_k.shape[1:])]).reshape(-1, 16, *flat_k.shape[1:])
    v16 = torch.cat([flat_v, flat_v.new_zeros(pad, *flat_v.shape[1:])]).reshape(-1, 16, *flat_v.shape[1:])
    table = (block_table.long() * size // 16).clamp(max=k16.shape[0] - 1).to(block_table.dtype)
    return paged_attention(q, k16, v16, table, seqlens_k)


@known_bad("reference_agreement", options={"kind": "paged"})
def paged_partials_by_page(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    seqlens_k: torch.Tensor,
) -> torch.Tensor:
    """Split-KV decoding that keeps each page's partial result in a workspace indexed by
    physical page: right while every page serves one sequence, wrong once prefix caching shares
    a page, when one sequence merges the partial another computed with its own queries."""
    from xattn_ref.zoo.kernels import paged_split_attention

    return paged_split_attention(q, k_cache, v_cache, block_table, seqlens_k, partials_by_page=True)


@known_bad("reference_agreement", options={"kind": "paged", "cache_layout": "hnd"})
def paged_hnd_reshaped(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    seqlens_k: torch.Tensor,
) -> torch.Tensor:
    """Takes an HND cache ``(num_blocks, H_kv, block_size, D)`` to NHD with ``reshape`` where a
    transpose was meant: right for one kv head or one key a page, a scramble of keys and heads
    otherwise."""
    from xattn_ref.zoo.kernels import paged_attention

    n, hkv, size = k_cache.shape[0], k_cache.shape[1], k_cache.shape[2]
    k, v = (c.reshape(n, size, hkv, c.shape[-1]) for c in (k_cache, v_cache))
    return paged_attention(q, k, v, block_table, seqlens_k)


@known_bad("finite_output", options={"kind": "paged", "table": "csr"})
def paged_csr_full_last_page(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    kv_indptr: torch.Tensor,
    kv_indices: torch.Tensor,
    kv_last_page_len: torch.Tensor,
) -> torch.Tensor:
    """Forgets ``kv_last_page_len``: every page of a sequence taken as full, so its last page's
    unused slots are read (NaN from a reused cache); right when every sequence fills its last
    page."""
    from xattn_ref.zoo.kernels import csr_to_block_table, paged_attention

    size = k_cache.shape[1]
    table, lens = csr_to_block_table(size, kv_indptr, kv_indices, torch.full_like(kv_last_page_len, size))
    return paged_attention(q, k_cache, v_cache, table, lens)


@known_bad("finite_output", options={"kind": "varlen"})
def varlen_reads_to_the_end(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
) -> torch.Tensor:
    """Takes the last sequence's keys to run to the end of the packed tensor, not to
    ``cu_seqlens_k[-1]``: right for a buffer packed to its end, NaN once a CUDA-graph-padded
    buffer carries a tail past it (flash-attention#2324, sglang#32477)."""
    from xattn_ref.zoo.kernels import varlen_reference_kernel

    ends = cu_seqlens_k.clone()
    ends[-1] = k.shape[0]
    return varlen_reference_kernel(q, k, v, cu_seqlens_q, ends, max_seqlen_q, max_seqlen_k)


@known_bad("reference_agreement", options={"kind": "varlen"})
def varlen_equal_queries(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
) -> torch.Tensor:
    """Takes every sequence to have ``max_seqlen_q`` queries (a prefill-only kernel's shortcut):
    right while each sequence has as many queries, wrong once a decode step (one query) or an
    empty one sits next to a prefill chunk (flash-attention#1537's class)."""
    from xattn_ref.zoo.kernels import varlen_reference_kernel

    n = cu_seqlens_q.shape[0] - 1
    uniform = torch.arange(n + 1, device=q.device) * max_seqlen_q
    uniform = torch.clamp(uniform, max=int(cu_seqlens_q[-1])).to(cu_seqlens_q)
    return varlen_reference_kernel(q, k, v, uniform, cu_seqlens_k, max_seqlen_q, max_seqlen_k)


@known_bad("reference_agreement", options={"kind": "hf", "mask": "bool"})
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


@known_bad("reference_agreement", options={"layout": "blhd"})
def blhd_reshaped(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """A (B, L, H, D) kernel that computes in (B, H, L, D) and goes back with ``reshape`` where
    ``transpose(1, 2)`` was meant: the right shape, its rows scrambled across heads and positions
    (right only with one head or one query)."""
    b, lq, h, _ = q.shape
    out = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask
    )
    return out.reshape(b, lq, h, v.shape[-1])
