"""Model cases: ``model_cases`` (``fn(input_ids, attention_mask) -> logits``, and an
encoder-decoder's decoder tokens), masks ``(B, L)`` with **True = a real token** (handed to the
model as int64 1/0)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from hypothesis import strategies as st

from xattn_ref._args import check_choices as _check_choices
from xattn_ref._args import check_int as _check_int
from xattn_ref._devices import ALL_DTYPES
from xattn_ref.cases.model import SIDES, ModelCase, ModelCaseSpec, Stream
from xattn_ref.strategies._base import _choice, _ints, lazy
from xattn_ref.strategies.kernel import _check_devices

__all__ = ["model_cases"]


@lazy
def model_cases(
    *,
    vocab_size: int,
    seq2seq: bool = False,
    dtypes: Sequence[torch.dtype] = ALL_DTYPES,
    devices: Sequence[str] = ("cpu",),
    max_batch_size: int = 3,
    max_length: int = 12,
    padding_sides: Sequence[str] = SIDES,
) -> st.SearchStrategy[ModelCase]:
    """Token batches for a model, as :class:`~xattn_ref.cases.model.ModelCase`.

    - ``vocab_size``: token ids are drawn from ``[0, vocab_size)`` (required).
    - ``seq2seq``: also draw an encoder input (``input_ids``, ``attention_mask``; the tokens
      become ``decoder_input_ids``, ``decoder_attention_mask``).
    - ``dtypes``, ``devices``: drawn from (default every dtype, the CPU).
    - ``max_batch_size``, ``max_length``: B and each L are drawn from 1 to these (half of the
      lengths up to 4, a quarter at ``max_length`` or one short of it: set it to a model's window
      edge).
    - ``padding_sides``: the sides a batch is padded on (``"right"``, ``"left"``; one per case).

    Example::

        @given(model_cases(vocab_size=64, dtypes=[torch.float32]))
        def test_my_model(case):
            logits = my_model(case.input_ids, case.attention_mask.long())  # 1 = a real token
            assert logits.isfinite().all(), case.snippet()

    Each sequence is unpadded (a quarter), entirely padding (a quarter), or has some padding on
    the case's side; shrinking goes to one short unpadded sequence.
    """

    vocab = _check_int("vocab_size", vocab_size, 1)
    if not isinstance(seq2seq, bool):
        from hypothesis.errors import InvalidArgument

        raise InvalidArgument(f"seq2seq must be True or False, got {seq2seq!r}")
    dts = _check_choices("dtypes", dtypes, ALL_DTYPES)
    devs = _check_devices(devices)
    b_max = _check_int("max_batch_size", max_batch_size, 1)
    l_max = _check_int("max_length", max_length, 1)
    sides = _check_choices("padding_sides", padding_sides, SIDES)
    return _model_cases(vocab, seq2seq, dts, devs, b_max, l_max, sides)


def _stream(d: st.DrawFn, b: int, l_max: int, side: str) -> Stream:
    # up to 4 (first: shrinking goes there), anywhere, or at the longest and one short of it
    branch = d(_choice(("short", "short", "anywhere", "edge")))
    ranges = {"short": (1, min(4, l_max)), "anywhere": (1, l_max), "edge": (max(1, l_max - 1), l_max)}
    low, high = ranges[branch]
    length = d(_ints(low, high))
    real = []
    for _ in range(b):
        how = d(_choice(("unpadded", "padding", "padded", "padded")))
        if how == "padded" and length > 1:
            real.append(d(_ints(1, length - 1)))
        else:
            real.append(0 if how == "padding" else length)
    return Stream(length, tuple(real), side)


@st.composite
def _model_cases(
    d: st.DrawFn,
    vocab: int,
    seq2seq: bool,
    dtypes: tuple[torch.dtype, ...],
    devices: tuple[str, ...],
    b_max: int,
    l_max: int,
    sides: tuple[str, ...],
) -> ModelCase:
    b = d(_ints(1, b_max))
    side = d(_choice(sides))
    tokens = _stream(d, b, l_max, side)
    context = _stream(d, b, l_max, side) if seq2seq else None
    spec = ModelCaseSpec(
        batch_size=b,
        vocab_size=vocab,
        tokens=tokens,
        dtype=d(_choice(dtypes)),
        device=d(_choice(devices)),
        seed=d(_ints(0, 2**32 - 1)),
        context=context,
        prompt=d(_ints(1, tokens.length)),
        chunk=d(_ints(1, 4)),  # token by token first (shrinks to it), chunks of 2 to 4
    )
    return spec.build()
