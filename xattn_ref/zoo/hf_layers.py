"""Hugging Face attention layers as targets, built from tiny configs (never downloaded), with
the masks and positions built by Hugging Face's own code, and the attention implementation the
user chooses (``attn_implementation="eager"``, ``"sdpa"``, ``"flex_attention"``):

- :func:`hf_encoder_layer`: an encoder layer (BERT, RoBERTa, ELECTRA), ``fn(x, mask)``
  (``--kind encoder``), its mask from ``masking_utils.create_bidirectional_mask``;
- :func:`hf_decoder_layer`: a decoder layer (Llama, Qwen2, Mistral), causal self-attention
  ``fn(x, mask)`` (``--kind encoder``) with rotary positions that follow the padding (as
  generation derives them, so a sequence alone and in a padded batch sit at the same positions)
  and the mask from ``masking_utils.create_causal_mask``;
- :func:`hf_cross_attention`: decoder cross-attention (BART, Whisper with
  ``key_value_states=``; T5, whose empty contexts average the padding: ``--empty-rows finite``),
  ``fn(x, context, context_mask)`` (``--kind layer``).

Every mask that crosses into these functions is bool, **True = a real token**; the adapters
convert it as Hugging Face's models do. For example::

    xattn-check 'xattn_ref.zoo.hf_layers:hf_decoder_layer(family="qwen2", attn_implementation="eager")' \\
        --kind encoder --dim 16
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["ENCODER_FAMILIES", "DECODER_FAMILIES", "CROSS_FAMILIES", "hf_cross_attention", "hf_decoder_layer",
           "hf_encoder_layer"]  # fmt: skip

ENCODER_FAMILIES = ("bert", "roberta", "electra")
DECODER_FAMILIES = ("llama", "qwen2", "mistral")
CROSS_FAMILIES = ("bart", "whisper", "t5")


def _check(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


def _config(family: str, dim: int, heads: int, attn_implementation: str, **extra: Any) -> Any:
    from transformers import AutoConfig

    config = AutoConfig.for_model(family, **extra)
    config._attn_implementation = attn_implementation
    return config


def hf_encoder_layer(
    family: str = "bert", *, attn_implementation: str = "sdpa", dim: int = 16, heads: int = 2, seed: int = 0
) -> nn.Module:
    """A seeded encoder layer of ``family`` (:data:`ENCODER_FAMILIES`) as ``fn(x, mask)``."""
    _check("family", family, ENCODER_FAMILIES)
    import importlib

    config = _config(
        family, dim, heads, attn_implementation, hidden_size=dim, num_attention_heads=heads,
        intermediate_size=2 * dim, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        embedding_size=dim,
    )  # fmt: skip
    module = importlib.import_module(f"transformers.models.{family}.modeling_{family}")
    layer_class = getattr(module, f"{type(config).__name__.removesuffix('Config')}Layer")
    torch.manual_seed(seed)
    return _Encoder(layer_class(config), config).eval()


class _Encoder(nn.Module):
    def __init__(self, layer: nn.Module, config: Any) -> None:
        super().__init__()
        self.layer, self.config = layer, config

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        from transformers.masking_utils import create_bidirectional_mask

        built = create_bidirectional_mask(config=self.config, inputs_embeds=x, attention_mask=mask.long())
        out = self.layer(x, attention_mask=built)
        return out[0] if isinstance(out, tuple) else out  # type: ignore[no-any-return]


def hf_decoder_layer(
    family: str = "llama",
    *,
    attn_implementation: str = "sdpa",
    dim: int = 16,
    heads: int = 4,
    kv_heads: int = 2,
    seed: int = 0,
) -> nn.Module:
    """A seeded decoder layer of ``family`` (:data:`DECODER_FAMILIES`), grouped kv heads and
    rotary positions, as causal self-attention ``fn(x, mask)``. (Rotary scores depend on
    relative positions only, so within one layer a shift of every position changes nothing;
    positions numbered through the padding matter in a model with absolute positions.)"""
    _check("family", family, DECODER_FAMILIES)
    import importlib

    config = _config(
        family, dim, heads, attn_implementation, hidden_size=dim, num_attention_heads=heads,
        num_key_value_heads=kv_heads, intermediate_size=2 * dim, num_hidden_layers=1, head_dim=dim // heads,
        max_position_embeddings=512, attention_dropout=0.0,
    )  # fmt: skip
    module = importlib.import_module(f"transformers.models.{family}.modeling_{family}")
    prefix = type(config).__name__.removesuffix("Config")
    torch.manual_seed(seed)
    layer = getattr(module, f"{prefix}DecoderLayer")(config, layer_idx=0)
    rotary = getattr(module, f"{prefix}RotaryEmbedding")(config=config)
    return _Decoder(layer, rotary, config).eval()


class _Decoder(nn.Module):
    def __init__(self, layer: nn.Module, rotary: nn.Module, config: Any) -> None:
        super().__init__()
        self.layer, self.rotary, self.config = layer, rotary, config

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        from transformers.masking_utils import create_causal_mask

        # positions follow the padding, as generation derives them from the attention mask
        position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)
        built = create_causal_mask(
            config=self.config, inputs_embeds=x, attention_mask=mask.long(), cache=None,
            position_ids=position_ids,
        )  # fmt: skip
        embeddings = self.rotary(x, position_ids)
        out = self.layer(x, attention_mask=built, position_ids=position_ids, position_embeddings=embeddings)
        return out[0] if isinstance(out, tuple) else out  # type: ignore[no-any-return]


def hf_cross_attention(
    family: str = "bart", *, attn_implementation: str = "sdpa", dim: int = 16, heads: int = 2, seed: int = 0
) -> nn.Module:
    """Seeded decoder cross-attention of ``family`` (:data:`CROSS_FAMILIES`) as
    ``fn(x, context, context_mask)`` (E_ctx = E)."""
    _check("family", family, CROSS_FAMILIES)
    torch.manual_seed(seed)
    if family == "t5":
        from transformers.models.t5.modeling_t5 import T5Attention

        config = _config("t5", dim, heads, attn_implementation, d_model=dim, d_kv=dim // heads,
                         num_heads=heads, d_ff=2 * dim, dropout_rate=0.0, is_decoder=True)  # fmt: skip
        t5 = T5Attention(config, has_relative_attention_bias=False, layer_idx=0)
        return _Cross(t5, config, "t5").eval()
    import importlib

    config = _config(family, dim, heads, attn_implementation, d_model=dim, decoder_attention_heads=heads,
                     encoder_attention_heads=heads, attention_dropout=0.0, dropout=0.0)  # fmt: skip
    module = importlib.import_module(f"transformers.models.{family}.modeling_{family}")
    attention = getattr(module, f"{type(config).__name__.removesuffix('Config')}Attention")
    layer = attention(dim, heads, is_decoder=True, config=config, layer_idx=0)
    return _Cross(layer, config, family).eval()


class _Cross(nn.Module):
    def __init__(self, attention: nn.Module, config: Any, family: str) -> None:
        super().__init__()
        self.attention, self.config, self.family = attention, config, family

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        from transformers.masking_utils import create_bidirectional_mask

        built = create_bidirectional_mask(
            config=self.config, inputs_embeds=x, attention_mask=context_mask.long(),
            encoder_hidden_states=context,
        )  # fmt: skip
        if self.family == "t5":
            out = self.attention(x, mask=built, key_value_states=context)
        else:
            out = self.attention(x, key_value_states=context, attention_mask=built)
        return out[0] if isinstance(out, tuple) else out  # type: ignore[no-any-return]
