"""Known-bad attention implementations: each has one realistic defect at the edges, and is
declared once, where it is written, with the property designed to catch it.

They exist to prove the suite can fail: the meta-tests assert that each one is caught, and by
which property. Use them to check that your own gate catches what it should::

    xattn-check xattn_ref.zoo.known_bad:neg_inf_softmax      # exits 1, finite_output fails

- :mod:`.kernels`: kernels in the default dialect (``fn(q, k, v, mask)``, True = may attend);
- :mod:`.dialects`: kernels in other dialects and kinds, with the options they are run with;
- :mod:`.layers`: layers (factories of ``fn(x, context, context_mask)``);
- :mod:`.models`: models (factories of ``fn(input_ids, attention_mask) -> logits``).

The views below are read off :data:`REGISTRY`; adding a known-bad implementation is one
decorated function.
"""

from __future__ import annotations

from typing import Any

from xattn_ref.zoo.known_bad._registry import REGISTRY, FiniteDefect, KnownBad, known_bad
from xattn_ref.zoo.known_bad.dialects import (
    bias_dropped,
    blhd_reshaped,
    causal_top_left_kernel,
    forgets_query_padding,
    forward_only_neg_inf,
    gqa_repeat_heads,
    hf_eager_attention,
    hf_wrong_gqa,
    padding_on_queries,
    paged_assumes_16,
    paged_csr_full_last_page,
    paged_hnd_reshaped,
    paged_partials_by_page,
    paged_physical_order,
    paged_reads_whole_pages,
    paged_top_left,
    scale_ignored,
    sentinel_as_allowed,
    sink_as_a_key,
    sink_left_out,
    softcap_after_mask,
    softcap_dropped,
    varlen_equal_queries,
    varlen_neg_inf,
    varlen_reads_next_key,
    varlen_reads_to_the_end,
    window_off_by_one,
)
from xattn_ref.zoo.known_bad.kernels import (
    batch_global_max,
    dk_doubled,
    dq_unscaled,
    dv_heads_reversed,
    finfo_min_additive,
    finfo_min_fill,
    finite_initial_max,
    first_tile_only,
    half_accumulator,
    half_logsumexp,
    half_precision_math,
    half_softmax,
    ignores_qk,
    minus_1e4_fill,
    minus_1e9_fill,
    mutates_mask,
    neg_inf_softmax,
    sentinel_empty_rows,
    single_key_fast_path,
    stride_ignoring_kernel,
    unguarded_long_context,
    wrong_scale_in_bfloat16,
    wrong_scale_without_mask,
    zero_after_neg_inf,
)
from xattn_ref.zoo.known_bad.layers import (
    batch_global_max_layer,
    finfo_min_fill_layer,
    half_path_wrong_grad_layer,
    half_precision_math_layer,
    mean_pooled_context_layer,
    neg_inf_softmax_layer,
    pooled_with_padding_layer,
    zeroes_padding_in_place_layer,
)
from xattn_ref.zoo.known_bad.models import (
    attends_to_padding,
    batch_normalized,
    cache_drops_mask,
    chunk_top_left,
    cleans_padding_in_place,
    half_precision_model,
    index_positions,
    mean_over_padded_length,
    nan_grad_model,
    neg_inf_model,
    neg_inf_seq2seq,
    sdpa_forgets_padding,
)

#: name -> kernel, in the default dialect.
KNOWN_BAD = {n: e.fn for n, e in REGISTRY.items() if e.kind == "kernel" and not e.options}
#: name -> the property designed to catch it (others may catch it too).
CAUGHT_BY = {n: REGISTRY[n].caught_by for n in KNOWN_BAD}
#: name -> where a finite defect exists (dtypes, logit scales, inputs).
FINITE_DEFECTS = {n: e.finite for n, e in REGISTRY.items() if e.finite is not None}
#: Kinds whose known-bads are factories of modules or models (their own views, below); every
#: other kind's are functions, called as the kind says (kernel, hf, varlen, paged, and any added).
_FACTORY_KINDS = ("layer", "encoder", "model")
#: name -> (function, its dialect options, with ``kind`` when not a kernel, the property): every
#: known-bad function but the default-dialect kernels of :data:`KNOWN_BAD`.
KNOWN_BAD_DIALECTS: dict[str, tuple[Any, dict[str, Any], str]] = {
    n: (e.fn, {**({"kind": e.kind} if e.kind != "kernel" else {}), **e.options}, e.caught_by)
    for n, e in REGISTRY.items()
    if e.kind not in _FACTORY_KINDS and n not in KNOWN_BAD
}
#: name -> zero-argument factory of a layer (E = 16).
KNOWN_BAD_LAYERS = {n: e.fn for n, e in REGISTRY.items() if e.kind == "layer"}
#: name -> the layer property designed to catch it.
LAYER_CAUGHT_BY = {n: REGISTRY[n].caught_by for n in KNOWN_BAD_LAYERS}
#: name -> (zero-argument factory of a model, its options, the property designed to catch it).
KNOWN_BAD_MODELS: dict[str, tuple[Any, dict[str, Any], str]] = {
    n: (e.fn, dict(e.options), e.caught_by) for n, e in REGISTRY.items() if e.kind == "model"
}

__all__ = [
    "CAUGHT_BY",
    "FINITE_DEFECTS",
    "KNOWN_BAD",
    "KNOWN_BAD_DIALECTS",
    "KNOWN_BAD_LAYERS",
    "KNOWN_BAD_MODELS",
    "LAYER_CAUGHT_BY",
    "REGISTRY",
    "FiniteDefect",
    "KnownBad",
    "known_bad",
    "attends_to_padding",
    "batch_normalized",
    "cache_drops_mask",
    "chunk_top_left",
    "cleans_padding_in_place",
    "half_precision_model",
    "index_positions",
    "mean_over_padded_length",
    "nan_grad_model",
    "neg_inf_model",
    "neg_inf_seq2seq",
    "sdpa_forgets_padding",
    "batch_global_max",
    "batch_global_max_layer",
    "bias_dropped",
    "blhd_reshaped",
    "causal_top_left_kernel",
    "dk_doubled",
    "dq_unscaled",
    "dv_heads_reversed",
    "finfo_min_additive",
    "finfo_min_fill",
    "finite_initial_max",
    "finfo_min_fill_layer",
    "first_tile_only",
    "forgets_query_padding",
    "forward_only_neg_inf",
    "gqa_repeat_heads",
    "half_accumulator",
    "half_logsumexp",
    "half_path_wrong_grad_layer",
    "half_precision_math",
    "half_precision_math_layer",
    "half_softmax",
    "hf_eager_attention",
    "hf_wrong_gqa",
    "ignores_qk",
    "mean_pooled_context_layer",
    "minus_1e4_fill",
    "minus_1e9_fill",
    "mutates_mask",
    "neg_inf_softmax",
    "neg_inf_softmax_layer",
    "padding_on_queries",
    "pooled_with_padding_layer",
    "scale_ignored",
    "sentinel_as_allowed",
    "sentinel_empty_rows",
    "single_key_fast_path",
    "paged_assumes_16",
    "paged_csr_full_last_page",
    "paged_hnd_reshaped",
    "paged_partials_by_page",
    "paged_physical_order",
    "paged_reads_whole_pages",
    "paged_top_left",
    "sink_as_a_key",
    "sink_left_out",
    "softcap_after_mask",
    "softcap_dropped",
    "stride_ignoring_kernel",
    "unguarded_long_context",
    "varlen_equal_queries",
    "varlen_neg_inf",
    "varlen_reads_next_key",
    "varlen_reads_to_the_end",
    "window_off_by_one",
    "wrong_scale_in_bfloat16",
    "wrong_scale_without_mask",
    "zero_after_neg_inf",
    "zeroes_padding_in_place_layer",
]
