"""Known-bad models, ``fn(input_ids, attention_mask) -> logits`` with attention_mask 1 = a real
token: zero-argument factories, each with one defect of the model level and the property that
catches it. Most are :class:`~xattn_ref.zoo.tiny_models.TinyLM` (V = 32) changed in one place;
the cache and implementation defects need a model with a cache and several attention
implementations, so they are tiny Hugging Face Llamas (V = 64) changed in one place."""

from __future__ import annotations

from typing import Any

import torch

from xattn_ref.zoo.known_bad._registry import known_bad
from xattn_ref.zoo.known_bad.kernels import half_precision_math, neg_inf_softmax, zero_after_neg_inf
from xattn_ref.zoo.tiny_models import TinyLM, TinySeq2Seq

TINY = {"vocab": 32}


@known_bad("finite_output", kind="model", options=TINY)
def neg_inf_model() -> TinyLM:
    """``-inf`` masking without a guard: a sequence that is all padding (or a left-padded query
    with no real token at or before it) gives NaN logits."""
    return TinyLM(neg_inf_softmax)


@known_bad("finite_output", kind="model", options={**TINY, "arch": "seq2seq"})
def neg_inf_seq2seq() -> TinySeq2Seq:
    """The seed's case: an encoder-decoder whose decoder cross-attends with ``-inf`` masking; an
    encoder input that is entirely padding gives NaN logits (x-transformers 1.26)."""
    return TinySeq2Seq(neg_inf_softmax)


@known_bad("finite_grad", kind="model", options=TINY)
def nan_grad_model() -> TinyLM:
    """Rows with no real key zeroed after a ``-inf`` softmax: the logits are finite, the
    parameters' gradients NaN."""
    return TinyLM(zero_after_neg_inf)


class _AttendsToPadding(TinyLM):
    """Forgets the padding in attention: real tokens attend to padded positions too."""

    def self_mask(self, attention_mask: torch.Tensor) -> torch.Tensor:
        return super().self_mask(torch.ones_like(attention_mask))


@known_bad("padding_invariance", kind="model", options=TINY)
def attends_to_padding() -> TinyLM:
    """Attention without the padding mask (causal only): what sits at a padded position reaches
    the real tokens after it."""
    return _AttendsToPadding()


class _IndexPositions(TinyLM):
    """Positions by index (``arange``), not counted among the real tokens: left padding shifts
    every real token's position."""

    def positions(self, attention_mask: torch.Tensor) -> torch.Tensor:
        length = attention_mask.shape[-1]
        return torch.arange(length, device=attention_mask.device).expand_as(attention_mask)


@known_bad("padding_side_invariance", kind="model", options=TINY)
def index_positions() -> TinyLM:
    """Absolute positions by index: a left-padded batch puts the real tokens at other positions
    than a right-padded one."""
    return _IndexPositions()


class _MeanOverLength(TinyLM):
    """Adds the mean of the real tokens' embeddings, divided by the padded length L instead of
    the number of real tokens, to every position: padding-invariant, but not what the sequence
    gives alone."""

    def embed_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = super().embed_tokens(input_ids, attention_mask)
        real = attention_mask.to(x.dtype).unsqueeze(-1)
        return x + (x * real).sum(1, keepdim=True) / attention_mask.shape[-1]


@known_bad("compaction_equivalence", kind="model", options=TINY)
def mean_over_padded_length() -> TinyLM:
    """A sequence summary divided by the padded length: a sequence alone, unpadded, gives other
    logits than its row of the padded batch."""
    return _MeanOverLength()


class _BatchNormalized(TinyLM):
    """Scales the embeddings by their largest magnitude over the whole batch."""

    def embed_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = super().embed_tokens(input_ids, attention_mask)
        return x / x.detach().abs().amax().clamp(min=1e-3)


@known_bad("batch_independence", kind="model", options=TINY)
def batch_normalized() -> TinyLM:
    """A statistic over the whole batch (padding included): one sequence changes the others."""
    return _BatchNormalized()


class _CleansPadding(TinyLM):
    """Writes token 0 into the caller's ``input_ids`` at padded positions, in place."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        input_ids.masked_fill_(attention_mask == 0, 0)  # the defect: the caller's tensor
        return super().forward(input_ids, attention_mask)


@known_bad("no_input_mutation", kind="model", options=TINY)
def cleans_padding_in_place() -> TinyLM:
    """"Cleans" the padding of the caller's ``input_ids`` in place."""
    return _CleansPadding()


@known_bad("dtype_consistency", kind="model", options=TINY)
def half_precision_model() -> TinyLM:
    """Attention computed in float16 whatever the model's dtype: float32 logits lose precision
    beyond float32's."""
    return TinyLM(half_precision_math)


def _llama(cls_body: dict[str, Any], attn_implementation: str) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    config._attn_implementation = attn_implementation
    torch.manual_seed(0)
    cls = type("KnownBadLlama", (LlamaForCausalLM,), cls_body)
    return cls(config).eval()


def _drops_cached_mask(min_tokens: int) -> Any:
    """A Llama ``forward`` that drops the attention mask on cached steps of at least
    ``min_tokens`` new tokens (the defect of the two known-bads below)."""

    def forward(
        self: Any, input_ids: Any = None, attention_mask: Any = None, position_ids: Any = None,
        cache: Any = None, use_cache: Any = None, **kwargs: Any,
    ) -> Any:  # fmt: skip
        if cache is not None and cache.get_seq_length() > 0 and input_ids.shape[1] >= min_tokens:
            attention_mask = None
        parent: Any = type(self).__mro__[1]
        return parent.forward(
            self, input_ids, attention_mask, position_ids=position_ids, cache=cache, use_cache=use_cache,
            **kwargs,
        )  # fmt: skip

    return forward


@known_bad("cached_decoding", kind="model")
def cache_drops_mask() -> Any:
    """A Llama whose cached decoding steps drop the attention mask ("the cache holds only real
    tokens"): with left padding each new token attends to the padding in the cache."""
    return _llama({"forward": _drops_cached_mask(1)}, "sdpa")


@known_bad("cached_decoding", kind="model")
def chunk_top_left() -> Any:
    """A Llama whose cached steps of several tokens drop the mask and leave SDPA's ``is_causal``
    to it ("several new queries: is_causal=True will do"), which aligns the causal mask top-left
    (pytorch#144858): a chunk onto a cache (chunked prefill, speculative verification) attends to
    its own future and misses the cache's end; right for a whole prompt and for one token at a
    time."""
    return _llama({"forward": _drops_cached_mask(2)}, "sdpa")


def _sdpa_drops_mask(self: Any, input_ids: Any = None, attention_mask: Any = None, **kwargs: Any) -> Any:
    if self.config._attn_implementation == "sdpa":
        attention_mask = None  # the defect: the fast path forgets the padding
    parent: Any = type(self).__mro__[1]
    return parent.forward(self, input_ids, attention_mask, **kwargs)


@known_bad("implementation_consistency", kind="model")
def sdpa_forgets_padding() -> Any:
    """A Llama (eager, as given) whose SDPA path forgets the padding mask."""
    return _llama({"forward": _sdpa_drops_mask}, "eager")
