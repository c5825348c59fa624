"""Layer targets: known-bad layers are caught by their property; correct layers pass."""

from __future__ import annotations

import pytest

from xattn_ref._devices import ALL_DTYPES
from xattn_ref.adapters import cross_attention_layer, decoder_layer, multihead_attention_layer
from xattn_ref.known_bad import KNOWN_BAD_LAYERS, LAYER_CAUGHT_BY
from xattn_ref.layers import LAYER_PROPERTIES
from xattn_ref.profiles import profile_settings
from xattn_ref.runner import run_target
from xattn_ref.targets import as_layer

SETTINGS = profile_settings("ci", max_examples=20)


def verdicts(name, module, props):
    target = as_layer(name, module, (16, 16))
    return {
        (p, r.dtype): r
        for p in props
        for r in (run_target(target, p, dtype=d, device="cpu", settings=SETTINGS) for d in ALL_DTYPES)
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
    results = verdicts("good", factory(), list(LAYER_PROPERTIES))
    failed = {k: r.message for k, r in results.items() if not r.ok}
    assert not failed


def test_decoder_layer_runs_as_a_layer_target():
    results = verdicts("decoder", decoder_layer(16, 2), ["no_input_mutation", "batch_independence"])
    assert all(r.status in ("passed", "failed") for r in results.values())
