"""Layer targets: known-bad layers are caught by their property; correct layers pass."""

from __future__ import annotations

import pytest
from _support import run

from xattn_ref._devices import ALL_DTYPES
from xattn_ref.adapters import cross_attention_layer, decoder_layer, multihead_attention_layer
from xattn_ref.known_bad import KNOWN_BAD_LAYERS, LAYER_CAUGHT_BY
from xattn_ref.plan import select_properties

LAYER_PROPERTIES = select_properties("layer", None, None)  # the default set (no opt-in)


def verdicts(name, module, props, max_examples=20):
    return {
        (p, d): run(p, module, d, kind="layer", name=name, max_examples=max_examples, dim=16)
        for p in props
        for d in ALL_DTYPES
    }


def test_every_layer_property_but_device_consistency_has_a_known_bad_layer():
    assert set(LAYER_PROPERTIES) - set(LAYER_CAUGHT_BY.values()) == {"finite_grad", "device_consistency"}


@pytest.mark.parametrize("name", list(KNOWN_BAD_LAYERS))
def test_each_known_bad_layer_is_caught_by_its_property(name):
    prop = LAYER_CAUGHT_BY[name]
    results = verdicts(name, KNOWN_BAD_LAYERS[name](), [prop])
    assert any(r.status == "failed" for r in results.values()), {k: r.message for k, r in results.items()}


def test_multihead_attention_as_most_code_calls_it_is_flagged_by_finite_output_and_grad():
    results = verdicts("mha", multihead_attention_layer(16, 2), ["finite_output", "finite_grad"])
    assert {r.status for r in results.values()} == {"failed"}


@pytest.mark.parametrize(
    "factory",
    [
        lambda: multihead_attention_layer(16, 2, need_weights=False),
        lambda: cross_attention_layer(dim=16),
    ],
    ids=["mha-need_weights-False", "cross_attention-safe_sdpa"],
)
def test_correct_layers_pass_every_layer_property(factory):
    results = verdicts("good", factory(), list(LAYER_PROPERTIES), max_examples=10)
    failed = {k: r.message for k, r in results.items() if r.status not in ("passed", "not-applicable")}
    assert not failed


def test_decoder_layer_runs_as_a_layer_target():
    results = verdicts("decoder", decoder_layer(16, 2), ["no_input_mutation", "batch_independence"])
    assert all(r.status in ("passed", "failed") for r in results.values()), results
