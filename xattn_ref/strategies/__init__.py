"""Hypothesis strategies for attention inputs and masks: kernel cases, layer cases, masks.

Mask convention everywhere here: a bool mask, **True = may attend** (as in
``torch.nn.functional.scaled_dot_product_attention``).

Use them in your own tests::

    from hypothesis import given, settings
    from xattn_ref.strategies import attention_cases

    @settings(deadline=None)  # first calls of torch ops are slow: never judge by time
    @given(attention_cases(dtypes=[torch.float32]))
    def test_my_attention_is_finite(case):
        out = my_attention(case.q, case.k, case.v, case.mask)
        assert out.isfinite().all(), case.snippet()

Tensors are never drawn element by element: Hypothesis draws shapes, mask patterns, lengths,
scales and a seed, and the tensors are built from them with torch's generator. This keeps
examples fast at any size and makes every example reproducible from ``repr(case.spec)``.

- :mod:`._base`: the default distributions and what the strategies share;
- :mod:`.masks`: ``masks``, ``mask_specs``; :mod:`.kernel`: ``attention_cases``;
  :mod:`.layer`: ``layer_cases``, ``encoder_cases``; :mod:`.model`: ``model_cases``.
"""

from __future__ import annotations

from xattn_ref.strategies._base import (
    DEFAULT_HEAD_SCALES,
    DEFAULT_LOGIT_SHIFTS,
    DEFAULT_LOGIT_STDS,
    DEFAULT_TILE_LENGTHS,
    DEFAULT_VALUE_MEANS,
    DEFAULT_VALUE_STDS,
    HALF_SHIFT_CAP,
    SINK_LOGITS,
    SOFTCAPS,
)
from xattn_ref.strategies.kernel import attention_cases
from xattn_ref.strategies.layer import encoder_cases, layer_cases
from xattn_ref.strategies.masks import mask_specs, masks
from xattn_ref.strategies.model import model_cases

__all__ = [
    "DEFAULT_HEAD_SCALES",
    "DEFAULT_LOGIT_SHIFTS",
    "DEFAULT_LOGIT_STDS",
    "DEFAULT_TILE_LENGTHS",
    "DEFAULT_VALUE_MEANS",
    "DEFAULT_VALUE_STDS",
    "HALF_SHIFT_CAP",
    "SINK_LOGITS",
    "SOFTCAPS",
    "attention_cases",
    "encoder_cases",
    "layer_cases",
    "mask_specs",
    "masks",
    "model_cases",
]
