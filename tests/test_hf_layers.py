"""Hugging Face layers as targets with no glue (xattn_ref.zoo.hf_layers): built from tiny
configs with Hugging Face's own mask builders, they pass where they are correct, the declarations
their documented behaviour needs take away the false alarms, and what they get wrong is found."""

from __future__ import annotations

import pytest
import torch
from _support import run

from xattn_ref.zoo.hf_layers import (
    CROSS_FAMILIES,
    DECODER_FAMILIES,
    ENCODER_FAMILIES,
    hf_cross_attention,
    hf_decoder_layer,
    hf_encoder_layer,
)

pytest.importorskip("transformers")

FAST = {"max_examples": 15}


@pytest.mark.parametrize("family", ENCODER_FAMILIES)
def test_encoder_layers_keep_the_padding_out_in_float32(family):
    layer = hf_encoder_layer(family, attn_implementation="sdpa")
    for prop in ("padding_invariance", "compaction_equivalence"):
        r = run(prop, layer, kind="encoder", dim=16, **FAST)
        assert r.status == "passed", (prop, r.message)


@pytest.mark.parametrize("family", DECODER_FAMILIES)
def test_decoder_layers_with_positions_that_follow_the_padding_are_batch_equivalent(family):
    layer = hf_decoder_layer(family, attn_implementation="eager")
    r = run("compaction_equivalence", layer, kind="encoder", dim=16, **FAST)
    assert r.status == "passed", r.message


@pytest.mark.parametrize("family", CROSS_FAMILIES)
def test_cross_attention_that_averages_an_empty_context_declares_it(family):
    eager = hf_cross_attention(family, attn_implementation="eager")
    assert run("padding_invariance", eager, kind="layer", dim=16, **FAST).status == "failed"
    for prop in ("padding_invariance", "compaction_equivalence", "batch_independence"):
        r = run(prop, eager, kind="layer", dim=16, empty_rows="finite", **FAST)
        assert r.status == "passed", (prop, r.message)


@pytest.mark.upstream
@pytest.mark.parametrize("family", ["bart", "t5"])
def test_eager_cross_attention_gives_nan_for_an_empty_context_in_float16(family):
    # finfo(float16).min + a negative logit rounds to -inf: a row of -inf, softmax NaN
    eager = hf_cross_attention(family, attn_implementation="eager")
    options = {"kind": "layer", "dim": 16, "empty_rows": "finite"}
    r = run("finite_output", eager, torch.float16, **options, max_examples=100)
    assert r.status == "failed" and "nan" in r.message.lower(), r.message


@pytest.mark.parametrize("family", ["bart", "whisper"])
def test_sdpa_cross_attention_passes_in_float16(family):
    layer = hf_cross_attention(family, attn_implementation="sdpa")
    r = run("finite_output", layer, torch.float16, kind="layer", dim=16, max_examples=100)
    assert r.status == "passed", r.message
