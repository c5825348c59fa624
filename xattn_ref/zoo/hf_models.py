"""Hugging Face models as targets of the ``model`` kind, built from tiny configs with seeded
random weights (never downloaded), in the attention implementation the user chooses
(``attn_implementation="eager"``, ``"sdpa"``):

- :func:`causal_lm`: a language model (Llama, Qwen2 and Qwen3 with grouped kv heads, Mistral
  with a sliding window of 4, Gemma 2 with a window of 4 every other layer and logit
  soft-capping, gpt-oss with attention sinks, a window and a mixture of experts, GPT-2 with
  absolute positions);
- :func:`encoder`: a masked language model (BERT, RoBERTa);
- :func:`seq2seq`: an encoder-decoder (BART, T5).

Each is called as its users call it, ``model(input_ids=..., attention_mask=...).logits``, with
``attention_mask`` 1 = a real token. For example::

    xattn-check 'xattn_ref.zoo.hf_models:causal_lm("llama")' --kind model
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["CAUSAL_FAMILIES", "ENCODER_FAMILIES", "SEQ2SEQ_FAMILIES", "causal_lm", "encoder", "seq2seq"]

#: family -> its tiny config's arguments beyond the shared ones
CAUSAL_FAMILIES: dict[str, dict[str, Any]] = {
    "llama": {"num_key_value_heads": 2},
    "qwen2": {"num_key_value_heads": 2},
    "qwen3": {"num_key_value_heads": 2, "head_dim": 8},
    "mistral": {"num_key_value_heads": 2, "sliding_window": 4},
    "gemma2": {"num_key_value_heads": 2, "head_dim": 8, "sliding_window": 4, "query_pre_attn_scalar": 8},
    "gpt_oss": {"num_key_value_heads": 2, "head_dim": 8, "num_local_experts": 4, "num_experts_per_tok": 2,
                "sliding_window": 4, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}},
    "gpt2": {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 64, "resid_pdrop": 0.0,
             "embd_pdrop": 0.0, "attn_pdrop": 0.0},
}  # fmt: skip
#: families whose Hugging Face models offer eager attention only (no SDPA path): their default
EAGER_ONLY = frozenset({"gemma2", "gpt_oss"})
ENCODER_FAMILIES: dict[str, dict[str, Any]] = {"bert": {}, "roberta": {"pad_token_id": 1}}
SEQ2SEQ_FAMILIES: dict[str, dict[str, Any]] = {
    "bart": {"d_model": 32, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
             "decoder_attention_heads": 4, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "dropout": 0.0,
             "attention_dropout": 0.0, "activation_dropout": 0.0, "max_position_embeddings": 64},
    "t5": {"d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_decoder_layers": 2, "num_heads": 4,
           "dropout_rate": 0.0, "relative_attention_num_buckets": 8},
}  # fmt: skip

_SHARED = {
    "vocab_size": 64,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 64,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
    "attention_dropout": 0.0,
    "pad_token_id": 0,
    "bos_token_id": 0,
    "eos_token_id": 0,
    "decoder_start_token_id": 0,
}


def _build(
    families: dict[str, dict[str, Any]], family: str, auto: str, attn_implementation: str, seed: int
) -> Any:
    if family not in families:
        raise ValueError(f"family must be one of {', '.join(families)}, got {family!r}")
    import transformers
    from transformers import AutoConfig

    config = AutoConfig.for_model(family, **{**_SHARED, **families[family]})
    config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    model = getattr(transformers, auto).from_config(config)
    return model.eval()


def causal_lm(family: str = "llama", *, attn_implementation: str | None = None, seed: int = 0) -> Any:
    """A seeded tiny language model of ``family`` (:data:`CAUSAL_FAMILIES`): V = 64, 2 layers; in
    SDPA unless ``attn_implementation`` says otherwise, or the family has eager only
    (:data:`EAGER_ONLY`)."""
    implementation = attn_implementation or ("eager" if family in EAGER_ONLY else "sdpa")
    return _build(CAUSAL_FAMILIES, family, "AutoModelForCausalLM", implementation, seed)


def encoder(family: str = "bert", *, attn_implementation: str = "sdpa", seed: int = 0) -> Any:
    """A seeded tiny masked language model of ``family`` (:data:`ENCODER_FAMILIES`)."""
    return _build(ENCODER_FAMILIES, family, "AutoModelForMaskedLM", attn_implementation, seed)


def seq2seq(family: str = "t5", *, attn_implementation: str = "sdpa", seed: int = 0) -> Any:
    """A seeded tiny encoder-decoder of ``family`` (:data:`SEQ2SEQ_FAMILIES`)."""
    return _build(SEQ2SEQ_FAMILIES, family, "AutoModelForSeq2SeqLM", attn_implementation, seed)
