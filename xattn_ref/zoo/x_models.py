"""x-transformers models as targets of the ``model`` kind, tiny and seeded (the seed's system:
x-transformers' encoder-decoder gave NaN for an encoder input that is all padding, until 1.32):

- :func:`x_lm`: ``TransformerWrapper(Decoder)``, a language model, called as its users call it,
  ``model(input_ids, mask=...)`` (mask bool, True = a real token);
- :func:`x_seq2seq`: ``XTransformer``'s encoder and decoder network, the decoder's logits
  (``XTransformer.forward`` returns the loss).

For example::

    xattn-check 'xattn_ref.zoo.x_models:x_seq2seq()' --kind model --arch seq2seq --vocab 64
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["x_lm", "x_seq2seq"]


def x_lm(*, seed: int = 0, rotary: bool = False) -> Any:
    """A seeded ``TransformerWrapper(num_tokens=64, attn_layers=Decoder(dim=32, depth=2, heads=4))``
    as ``fn(input_ids, attention_mask)`` (``rotary=True``: rotary positions instead of learned
    absolute ones)."""
    from x_transformers import Decoder, TransformerWrapper

    torch.manual_seed(seed)
    layers = Decoder(dim=32, depth=2, heads=4, rotary_pos_emb=rotary)
    model = TransformerWrapper(num_tokens=64, max_seq_len=64, attn_layers=layers, use_abs_pos_emb=not rotary)
    return _Masked(model)


class _Masked(nn.Module):
    """``model(input_ids, mask=attention_mask.bool())``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(input_ids, mask=attention_mask.bool())
        return out


class _Seq2Seq(nn.Module):
    """The decoder network's logits over the encoder's embeddings."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model: Any = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, decoder_input_ids: torch.Tensor,
        decoder_attention_mask: torch.Tensor,
    ) -> torch.Tensor:  # fmt: skip
        mask = attention_mask.bool()
        context = self.model.encoder(input_ids, mask=mask, return_embeddings=True)
        logits: torch.Tensor = self.model.decoder.net(
            decoder_input_ids, mask=decoder_attention_mask.bool(), context=context, context_mask=mask
        )
        return logits


def x_seq2seq(*, seed: int = 0) -> Any:
    """A seeded ``XTransformer(dim=32, depth 2 and 4 heads each side, 64 tokens)`` as
    ``fn(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask)``."""
    from x_transformers import XTransformer

    torch.manual_seed(seed)
    model = XTransformer(
        dim=32, enc_num_tokens=64, enc_depth=2, enc_heads=4, enc_max_seq_len=64, dec_num_tokens=64,
        dec_depth=2, dec_heads=4, dec_max_seq_len=64,
    )  # fmt: skip
    return _Seq2Seq(model)
