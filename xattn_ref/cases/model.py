"""Model cases: token batches for ``fn(input_ids, attention_mask) -> logits`` (and an
encoder-decoder's ``decoder_input_ids, decoder_attention_mask``), ``attention_mask`` ``(B, L)``
with **1 = a real token** (Hugging Face's convention; bool in the case, True = real), with their
printable specs.

Each sequence's real tokens are contiguous, padded on one side (``left`` or ``right``), as a
tokenizer pads them; a sequence may be entirely padding. The logits judged are those at real
tokens (of the decoder, for an encoder-decoder): a padded position's logits must be finite and
are otherwise the model's business.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

__all__ = ["ModelCase", "ModelCaseSpec", "Stream"]

SIDES = ("right", "left")


@dataclass(frozen=True)
class Stream:
    """One token sequence per batch element: ``length`` positions, ``real[b]`` real tokens each,
    padded on ``side``."""

    length: int
    real: tuple[int, ...]
    side: str = "right"

    def mask(self) -> torch.Tensor:
        """Bool ``(B, length)``, True = a real token."""
        pos = torch.arange(self.length)
        n = torch.tensor(self.real).unsqueeze(-1)
        return pos >= self.length - n if self.side == "left" else pos < n

    def describe(self) -> str:
        return f"L={self.length} {self.side}-padded, real tokens {list(self.real)}"


@dataclass(frozen=True)
class ModelCaseSpec:
    """Everything needed to rebuild one model case: token ids uniform in ``[0, vocab_size)`` from
    the seed (padded positions hold token ids too), the tokens' :class:`Stream` (the decoder's for
    an encoder-decoder), and for an encoder-decoder the encoder's ``context`` stream; ``prompt``:
    how many positions a cached decoding reads at once; ``chunk``: how many it feeds onto the cache
    at each step after that (1: token by token, as generation; more: chunked prefill and
    speculative verification, several queries onto a cache)."""

    batch_size: int
    vocab_size: int
    tokens: Stream
    dtype: torch.dtype
    device: str
    seed: int
    context: Stream | None = None
    prompt: int = 1
    chunk: int = 1

    def steps(self, length: int) -> list[tuple[int, int]]:
        """The ``(start, stop)`` positions of each cached-decoding step over ``length`` positions."""
        prompt = min(self.prompt, length)
        return [(0, prompt), *((t, min(t + self.chunk, length)) for t in range(prompt, length, self.chunk))]

    def build(self) -> ModelCase:
        gen = torch.Generator().manual_seed(self.seed)
        b = self.batch_size
        ids = torch.randint(0, self.vocab_size, (b, self.tokens.length), generator=gen)
        fields: dict[str, torch.Tensor | None] = {"decoder_input_ids": None, "decoder_attention_mask": None}
        if self.context is None:
            fields.update(input_ids=ids, attention_mask=self.tokens.mask())
        else:
            ctx = torch.randint(0, self.vocab_size, (b, self.context.length), generator=gen)
            fields.update(
                input_ids=ctx,
                attention_mask=self.context.mask(),
                decoder_input_ids=ids,
                decoder_attention_mask=self.tokens.mask(),
            )
        on = {n: None if t is None else t.to(self.device) for n, t in fields.items()}
        return ModelCase(spec=self, **on)  # type: ignore[arg-type]

    def describe(self) -> str:
        dtype = str(self.dtype).removeprefix("torch.")
        head = f"B={self.batch_size} V={self.vocab_size} {dtype} {self.device}"
        if self.context is None:
            return f"{head}; tokens {self.tokens.describe()}"
        return f"{head}; encoder {self.context.describe()}; decoder {self.tokens.describe()}"


@dataclass(frozen=True, eq=False)
class ModelCase:
    """Inputs for one model call.

    - ``input_ids`` ``(B, L)`` int64, ``attention_mask`` ``(B, L)`` bool, **True = a real token**
      (the call hands it to the model as int64 1/0);
    - an encoder-decoder's ``decoder_input_ids`` and ``decoder_attention_mask`` (else None): the
      encoder reads ``input_ids``, the logits are the decoder's.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    decoder_input_ids: torch.Tensor | None
    decoder_attention_mask: torch.Tensor | None
    spec: ModelCaseSpec

    output_name = "logits"

    # --- what every case has ---------------------------------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        return self.spec.dtype

    @property
    def device(self) -> torch.device:
        return self.input_ids.device

    @property
    def seed(self) -> int:
        return self.spec.seed

    @property
    def batch_size(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def seq2seq(self) -> bool:
        return self.decoder_input_ids is not None

    @property
    def tokens(self) -> torch.Tensor:
        """The ids whose logits are judged (the decoder's for an encoder-decoder)."""
        return self.input_ids if self.decoder_input_ids is None else self.decoder_input_ids

    def judged(self) -> torch.Tensor:
        """Bool ``(B, L)``: the logits the comparisons judge (real tokens)."""
        mask = self.attention_mask if self.decoder_attention_mask is None else self.decoder_attention_mask
        return mask

    def arguments(self) -> dict[str, torch.Tensor]:
        """The model's arguments, masks as int64 1/0 (1 = a real token)."""
        args = {"input_ids": self.input_ids, "attention_mask": self.attention_mask.long()}
        if self.decoder_input_ids is not None and self.decoder_attention_mask is not None:
            args.update(
                decoder_input_ids=self.decoder_input_ids,
                decoder_attention_mask=self.decoder_attention_mask.long(),
            )
        return args

    def inputs(self) -> dict[str, torch.Tensor]:
        return {}  # token ids: the gradients are the parameters'

    def to(self, *, dtype: torch.dtype | None = None, device: str | None = None) -> ModelCase:
        spec = dataclasses.replace(
            self.spec,
            dtype=self.dtype if dtype is None else dtype,
            device=str(self.device) if device is None else device,
        )
        moved = {n: None if t is None else t.to(spec.device) for n, t in self._tensors().items()}
        return ModelCase(spec=spec, **moved)  # type: ignore[arg-type]

    def replace(self, **tensors: torch.Tensor | None) -> ModelCase:
        return dataclasses.replace(self, **tensors)  # type: ignore[arg-type]

    def _tensors(self) -> dict[str, torch.Tensor | None]:
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "decoder_input_ids": self.decoder_input_ids,
            "decoder_attention_mask": self.decoder_attention_mask,
        }

    def where(self, name: str, index: tuple[int, ...]) -> str:
        if name != self.output_name or len(index) < 2:
            return ""
        b, i = index[0], index[1]
        mask = self.judged()
        what = "a real token" if bool(mask[b, i]) else "padding"
        n = int(mask[b].sum())
        text = f"position [{b}, {i}] is {what}; sequence {b} has {n} real tokens of {mask.shape[1]}"
        if self.seq2seq:
            n = int(self.attention_mask[b].sum())
            text += (
                "; its encoder input is entirely padding"
                if n == 0
                else f"; its encoder input has {n} real tokens"
            )
        return text

    # --- the changes the properties make ----------------------------------------------------

    def with_padding_replaced(self) -> tuple[ModelCase, str] | None:
        """Other token ids at every padded position (the encoder's too); None without padding."""
        gen = torch.Generator().manual_seed(self.seed + 2)
        changed: dict[str, torch.Tensor] = {}
        count = 0
        for ids, mask in self._streams():
            pad = ~mask.cpu()
            if not bool(pad.any()):
                continue
            count += int(pad.sum())
            other = torch.randint(0, self.spec.vocab_size, tuple(ids.shape), generator=gen)
            changed[self._name(ids)] = torch.where(pad, other, ids.cpu()).to(ids.device)
        if not changed:
            return None
        return self.replace(**changed), f"replacing the token ids at the {count} padded positions by others"

    def with_padding_poisoned(self) -> None:
        return None  # token ids hold no NaN

    def _streams(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        streams = [(self.input_ids, self.attention_mask)]
        if self.decoder_input_ids is not None and self.decoder_attention_mask is not None:
            streams.append((self.decoder_input_ids, self.decoder_attention_mask))
        return streams

    def _name(self, ids: torch.Tensor) -> str:
        return "input_ids" if ids is self.input_ids else "decoder_input_ids"

    def compactable(self) -> bool:
        return True

    def alone(self, b: int) -> tuple[ModelCase, str] | None:
        """Sequence ``b`` alone, its padding removed (None when it, or its encoder input, is all
        padding: there is nothing to run)."""
        kept: dict[str, torch.Tensor] = {}
        for ids, mask in self._streams():
            keep = mask[b].nonzero().squeeze(-1)
            if keep.numel() == 0:
                return None
            kept[self._name(ids)] = ids[b : b + 1, keep]
            name = "attention_mask" if ids is self.input_ids else "decoder_attention_mask"
            kept[name] = torch.ones(1, keep.numel(), dtype=torch.bool, device=self.device)
        return self.replace(**kept), f"the model on sequence {b} alone with its padding removed"

    def pick(self, b: int, out: torch.Tensor) -> torch.Tensor:
        """The part of the batch's logits that :meth:`alone` ``(b)`` computes: b's real tokens."""
        return out[b : b + 1, self.judged()[b].nonzero().squeeze(-1)]

    def redrawn(self, b: int) -> tuple[ModelCase, str]:
        gen = torch.Generator().manual_seed(self.seed + 3)
        changed = {}
        for ids, _ in self._streams():
            new = ids.clone()
            new[b] = torch.randint(0, self.spec.vocab_size, tuple(ids[b].shape), generator=gen).to(ids.device)
            changed[self._name(ids)] = new
        return self.replace(**changed), f"sequence {b} redrawn (other token ids)"

    def emptied(self, b: int) -> tuple[ModelCase, str]:
        """Sequence ``b`` made all padding (for an encoder-decoder, its encoder input: the decoder
        then cross-attends to nothing but padding)."""
        mask = self.attention_mask.clone()
        mask[b] = False
        what = "encoder input" if self.seq2seq else "tokens"
        return self.replace(attention_mask=mask), f"sequence {b}'s {what} made all padding"

    def with_side(self, side: str) -> ModelCase:
        """The same real tokens, every stream padded on ``side``."""
        changed: dict[str, torch.Tensor] = {}
        for ids, mask in self._streams():
            new_mask = torch.zeros_like(mask)
            new_ids = ids.clone()
            length = mask.shape[1]
            for b in range(self.batch_size):
                keep = mask[b].nonzero().squeeze(-1)
                n = keep.numel()
                at = slice(length - n, length) if side == "left" else slice(0, n)
                new_ids[b, at] = ids[b, keep]
                new_mask[b, at] = True
            changed[self._name(ids)] = new_ids
            changed["attention_mask" if ids is self.input_ids else "decoder_attention_mask"] = new_mask
        return self.replace(**changed)

    def describe(self) -> str:
        return self.spec.describe()

    def snippet(self) -> str:
        return (
            "import torch\n"
            "from xattn_ref.cases.model import ModelCaseSpec, Stream\n"
            f"case = {self.spec!r}.build()\n"
            "input_ids, attention_mask = case.input_ids, case.attention_mask.long()  # 1 = a real token"
            + (
                "\ndecoder_input_ids, decoder_attention_mask = case.decoder_input_ids, "
                "case.decoder_attention_mask.long()"
                if self.seq2seq
                else ""
            )
        )

    def __repr__(self) -> str:
        return f"ModelCase({self.describe()})"
