"""A tiny model in plain torch over any kernel ``fn(q, k, v, mask)`` (mask True = may attend):
the model kind's correct built-in, and the body of its known-bad models
(:mod:`xattn_ref.zoo.known_bad.models`), each of which changes one thing.

``TinyLM`` is ``fn(input_ids, attention_mask) -> logits`` (``attention_mask`` 1 = a real
token): embeddings plus learned absolute positions counted among the real tokens (as generation
derives them), two pre-norm causal self-attention blocks, an LM head. ``TinySeq2Seq`` adds an
encoder (bidirectional) and decoder cross-attention, ``fn(input_ids, attention_mask,
decoder_input_ids, decoder_attention_mask)``. For example::

    xattn-check 'xattn_ref.zoo.tiny_models:TinyLM()' --kind model --vocab 32
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from xattn_ref.guard import safe_sdpa

__all__ = ["Kernel", "TinyLM", "TinySeq2Seq", "positions_among_real"]

Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]

VOCAB, DIM, HEADS, LAYERS, MAX_LENGTH = 32, 16, 2, 2, 64


def _guarded(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return safe_sdpa(q, k, v, attn_mask=mask)


def positions_among_real(mask: torch.Tensor) -> torch.Tensor:
    """Each real token's index among its sequence's real tokens (0 at padding)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


class _Attention(nn.Module):
    def __init__(self, kernel: Kernel) -> None:
        super().__init__()
        self.kernel = kernel
        self.q, self.k, self.v, self.o = (nn.Linear(DIM, DIM) for _ in range(4))

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, lq, _ = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, t.shape[1], HEADS, DIM // HEADS).transpose(1, 2)

        out = self.kernel(heads(self.q(x)), heads(self.k(context)), heads(self.v(context)), mask)
        y: torch.Tensor = self.o(out.transpose(1, 2).reshape(b, lq, DIM))
        return y


class _Block(nn.Module):
    def __init__(self, kernel: Kernel, cross: bool = False) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(DIM), nn.LayerNorm(DIM), nn.LayerNorm(DIM)
        self.attn = _Attention(kernel)
        self.cross = _Attention(kernel) if cross else None
        self.mlp = nn.Sequential(nn.Linear(DIM, 2 * DIM), nn.GELU(), nn.Linear(2 * DIM, DIM))

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:  # fmt: skip
        h = self.norm1(x)
        x = x + self.attn(h, h, mask)
        if self.cross is not None and context is not None:
            x = x + self.cross(self.norm3(x), context, context_mask)
        y: torch.Tensor = x + self.mlp(self.norm2(x))
        return y


class TinyLM(nn.Module):
    """A seeded tiny causal language model over ``kernel`` (default: the guarded SDPA)."""

    def __init__(self, kernel: Kernel = _guarded, *, seed: int = 0, causal: bool = True) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.causal = causal
        self.embed = nn.Embedding(VOCAB, DIM)
        self.position = nn.Embedding(MAX_LENGTH, DIM)
        self.blocks = nn.ModuleList(_Block(kernel) for _ in range(LAYERS))
        self.norm = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, VOCAB)

    def positions(self, attention_mask: torch.Tensor) -> torch.Tensor:
        return positions_among_real(attention_mask)

    def embed_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x: torch.Tensor = self.embed(input_ids) + self.position(self.positions(attention_mask))
        return x

    def self_mask(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """``(B, 1, L, L)`` True = may attend: real keys, at or before the query when causal."""
        keys = attention_mask.bool()[:, None, None, :]
        if not self.causal:
            return keys
        length = attention_mask.shape[-1]
        return keys & torch.ones(length, length, dtype=torch.bool, device=keys.device).tril()

    def hidden(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = self.self_mask(attention_mask)
        for block in self.blocks:
            x = block(x, mask)
        return x

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.hidden(self.embed_tokens(input_ids, attention_mask), attention_mask)
        logits: torch.Tensor = self.head(self.norm(x))
        return logits


class TinySeq2Seq(nn.Module):
    """A seeded tiny encoder-decoder over ``kernel``: the decoder cross-attends to the encoder's
    real tokens (none, when its input is entirely padding: the seed's case)."""

    def __init__(self, kernel: Kernel = _guarded, *, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.encoder = TinyLM(kernel, seed=seed, causal=False)
        self.decoder = TinyLM(kernel, seed=seed + 1)
        self.decoder.blocks = nn.ModuleList(_Block(kernel, cross=True) for _ in range(LAYERS))

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, decoder_input_ids: torch.Tensor,
        decoder_attention_mask: torch.Tensor,
    ) -> torch.Tensor:  # fmt: skip
        enc = self.encoder
        context = enc.norm(enc.hidden(enc.embed_tokens(input_ids, attention_mask), attention_mask))
        dec = self.decoder
        x = dec.embed_tokens(decoder_input_ids, decoder_attention_mask)
        mask, context_mask = dec.self_mask(decoder_attention_mask), attention_mask.bool()[:, None, None, :]
        for block in dec.blocks:
            x = block(x, mask, context, context_mask)
        logits: torch.Tensor = dec.head(dec.norm(x))
        return logits
