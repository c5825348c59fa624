"""The public data model: attention cases, the printable specs they are built from, and masks.

Two kinds of case, one protocol (:class:`Case`):

- :class:`AttentionCase`: inputs of a *kernel* ``fn(q, k, v, mask)`` in SDPA's layout, mask
  bool, **True = may attend**;
- :class:`LayerCase`: inputs of a *layer* ``fn(x, context, context_mask)``, ``context_mask``
  ``(B, Lk)`` bool, **True = a real context token**;
- :class:`EncoderCase`: inputs of a *self-attention layer* ``fn(x, mask)``, ``mask`` ``(B, L)``
  bool, **True = a real token** (padded positions are queries too);
- :class:`ModelCase`: token batches for a *model* ``fn(input_ids, attention_mask) -> logits``,
  ``attention_mask`` ``(B, L)``, **True (1) = a real token**, padded left or right.

A spec holds only small values (shapes, pattern names, lengths, seeds, scales); ``build()``
turns it into tensors with torch's generator. ``repr(spec)`` is valid Python, so a failing
case is reproduced by pasting one line. ``AttentionCase.from_tensors(q, k, v, mask)`` makes a
case of your own tensors, so every check in :mod:`xattn_ref.checks` runs on them too.

Einstein notation: b batch, h heads, i query position, j key position, d head dim, e value dim.
"""

from __future__ import annotations

from xattn_ref.cases.kernel import AttentionCase, CaseSpec
from xattn_ref.cases.layer import EncoderCase, EncoderCaseSpec, LayerCase, LayerCaseSpec
from xattn_ref.cases.masks import (
    ALL_MASK_LAYOUTS,
    ALL_MASK_PATTERNS,
    BIAS_KINDS,
    CAUSAL_ALIGNMENTS,
    MASK_LAYOUTS,
    MASK_PATTERNS,
    BiasSpec,
    MaskSpec,
    SlicePattern,
    causal_mask,
    window_mask,
)
from xattn_ref.cases.memory import MEMORY_LAYOUTS
from xattn_ref.cases.model import ModelCase, ModelCaseSpec, Stream
from xattn_ref.cases.protocol import Case

__all__ = [
    "ALL_MASK_LAYOUTS",
    "AttentionCase",
    "BIAS_KINDS",
    "BiasSpec",
    "CAUSAL_ALIGNMENTS",
    "Case",
    "CaseSpec",
    "EncoderCase",
    "EncoderCaseSpec",
    "LayerCase",
    "LayerCaseSpec",
    "MASK_LAYOUTS",
    "MASK_PATTERNS",
    "ALL_MASK_PATTERNS",
    "MEMORY_LAYOUTS",
    "MaskSpec",
    "ModelCase",
    "ModelCaseSpec",
    "SlicePattern",
    "Stream",
    "causal_mask",
    "window_mask",
]
