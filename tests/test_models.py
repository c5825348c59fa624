"""The model kind: each property fails on its known-bad model, correct models pass, what cannot
be tested says so, and the real findings in Hugging Face models stay found."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from tests._support import run
from xattn_ref.kinds.model import MODEL_PROPERTIES
from xattn_ref.strategies.model import model_cases
from xattn_ref.zoo.known_bad import KNOWN_BAD_MODELS
from xattn_ref.zoo.tiny_models import TinyLM, TinySeq2Seq

#: properties a CPU run can test on a correct model (device_consistency needs an accelerator)
ON_CPU = [p for p in MODEL_PROPERTIES if p != "device_consistency"]


def test_every_model_property_but_device_consistency_has_a_known_bad_model():
    assert set(MODEL_PROPERTIES) - {p for _, _, p in KNOWN_BAD_MODELS.values()} == {"device_consistency"}


@pytest.mark.parametrize("name", list(KNOWN_BAD_MODELS))
def test_each_known_bad_model_is_caught_by_its_property(name):
    factory, options, prop = KNOWN_BAD_MODELS[name]
    result = run(prop, factory(), kind="model", name=name, **options)
    assert result.status == "failed", (result.status, result.message)


@pytest.mark.parametrize(
    ("factory", "options"),
    [(TinyLM, {"vocab": 32}), (TinySeq2Seq, {"vocab": 32, "arch": "seq2seq"})],
    ids=["TinyLM", "TinySeq2Seq"],
)
def test_correct_tiny_models_pass_every_property_that_applies(factory, options):
    model = factory()
    verdicts = {p: run(p, model, torch.float32, kind="model", max_examples=15, **options) for p in ON_CPU}
    failed = {p: r.message for p, r in verdicts.items() if r.status in ("failed", "error")}
    assert not failed
    # a plain model has no cache and one attention implementation: not tested, and it says why
    for prop, why in (("cached_decoding", "cache"), ("implementation_consistency", "one attention")):
        assert verdicts[prop].status == "not-applicable" and why in verdicts[prop].message


def test_a_hugging_face_language_model_passes_in_float32_with_its_cache_and_implementations():
    """Eager attention: its float64 run is NaN for a left-padded batch (finding M1), so the float32
    budgets of those cases stand on the model's float32 run."""
    from xattn_ref.zoo.hf_models import causal_lm

    model = causal_lm("llama", attn_implementation="eager")
    verdicts = {p: run(p, model, dtype=torch.float32, kind="model", max_examples=15) for p in ON_CPU}
    assert {p: r.status for p, r in verdicts.items()} == dict.fromkeys(ON_CPU, "passed")


def test_a_plain_model_needs_its_vocabulary_named():
    with pytest.raises(TypeError, match="vocab is required"):
        run("finite_output", TinyLM(), kind="model")


def test_the_cli_names_a_missing_vocabulary_in_one_line(capsys):
    from xattn_ref.cli import main

    assert main(["xattn_ref.zoo.tiny_models:TinyLM()", "--kind", "model"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--vocab is required" in err[0]


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [({"vocab_size": 0}, "vocab_size"), ({"vocab_size": 8, "padding_sides": ["top"]}, "padding_sides"),
     ({"vocab_size": 8, "max_length": 0}, "max_length"), ({"vocab_size": 8, "seq2seq": 1}, "seq2seq")],
)  # fmt: skip
def test_model_cases_reject_bad_arguments_naming_them(kwargs, argument):
    with pytest.raises(InvalidArgument, match=argument):
        model_cases(**kwargs).example()


def test_model_cases_shrink_to_one_short_unpadded_sequence_and_often_hold_all_padding():
    from hypothesis import find

    simplest = find(model_cases(vocab_size=8, dtypes=[torch.float32]), lambda case: True)
    assert simplest.batch_size == 1 and simplest.tokens.shape == (1, 1)
    assert bool(simplest.attention_mask.all())
    seen = []

    @settings(max_examples=60, database=None)
    @given(model_cases(vocab_size=8, seq2seq=True, dtypes=[torch.float32]))
    def draw(case):
        seen.append((bool((~case.attention_mask.any(-1)).any()), case.spec.tokens.side))

    draw()
    assert sum(empty for empty, _ in seen) >= 10  # an encoder input that is all padding: the seed's case
    assert {side for _, side in seen} == {"left", "right"}


@given(case=model_cases(vocab_size=8, dtypes=[torch.float32]), side=st.sampled_from(["left", "right"]))
@settings(max_examples=30, database=None)
def test_moving_the_padding_keeps_each_sequences_real_tokens(case, side):
    moved = case.with_side(side)
    for b in range(case.batch_size):
        real = case.input_ids[b][case.attention_mask[b]]
        assert torch.equal(real, moved.input_ids[b][moved.attention_mask[b]])


# --- real findings: a failure here means upstream changed (docs/models.md) ------------------


@pytest.mark.upstream
def test_hf_eager_llama_in_float64_gives_nan_logits_for_a_padded_sequence():
    from xattn_ref.zoo.hf_models import causal_lm

    model = causal_lm("llama", attn_implementation="eager")
    result = run("finite_output", model, torch.float64, kind="model")
    assert result.status == "failed" and "nan" in result.message


@pytest.mark.upstream
def test_hf_t5_logits_depend_on_the_padding_of_an_encoder_input_that_is_all_padding():
    import re

    from xattn_ref.zoo.hf_models import seq2seq

    result = run("padding_invariance", seq2seq("t5"), kind="model")  # not shrunk: the first case found
    assert result.status == "failed", result.message
    encoder = re.search(r"encoder L=\d+ \w+-padded, real tokens \[([\d, ]+)\]", result.case or "")
    assert encoder and 0 in [int(n) for n in encoder.group(1).split(",")], result.case  # one all padding


@pytest.mark.upstream
def test_hf_bert_takes_right_padding_only():
    from xattn_ref.zoo.hf_models import encoder

    model = encoder("bert")
    assert run("padding_side_invariance", model, kind="model").status == "failed"
    right_only = run("padding_side_invariance", model, kind="model", padding_side="right")
    assert right_only.status == "not-applicable" and "right padding only" in right_only.message


@pytest.mark.upstream
def test_positions_derived_from_the_mask_are_what_lets_gpt2_take_left_padding():
    from xattn_ref.zoo.hf_models import causal_lm

    model = causal_lm("gpt2")
    assert run("padding_side_invariance", model, kind="model").status == "passed"
    assert run("padding_side_invariance", model, kind="model", positions="model").status == "failed"


def test_cached_decoding_feeds_chunks_and_catches_a_top_left_causal_chunk():
    """A chunk of several tokens onto a cache (chunked prefill, speculative verification): the
    known-bad Llama that leaves a chunk's causal mask to SDPA's top-left is_causal is right token
    by token and wrong in chunks; a correct Llama is right in both."""
    from xattn_ref.cases.model import ModelCaseSpec, Stream
    from xattn_ref.checks import check
    from xattn_ref.errors import PropertyFailure
    from xattn_ref.targets import as_target
    from xattn_ref.zoo.hf_models import causal_lm
    from xattn_ref.zoo.known_bad import chunk_top_left

    def case(chunk):
        tokens = Stream(length=7, real=(7, 5), side="left")
        return ModelCaseSpec(2, 64, tokens, torch.float32, "cpu", 0, prompt=2, chunk=chunk).build()

    assert case(3).spec.steps(7) == [(0, 2), (2, 5), (5, 7)]
    bad, good = (
        as_target(chunk_top_left(), kind="model").call,
        as_target(causal_lm("llama"), kind="model").call,
    )
    assert check("cached_decoding", bad, case(1))
    with pytest.raises(PropertyFailure, match="3 at a time"):
        check("cached_decoding", bad, case(3))
    assert check("cached_decoding", good, case(1)) and check("cached_decoding", good, case(3))


@pytest.mark.sweep
@pytest.mark.upstream
@pytest.mark.parametrize("family", ["llama", "mistral"])
def test_hugging_face_continuous_batching_gives_each_request_its_greedy_tokens(family):
    """``generate_batch`` (continuous batching over a paged cache: requests of 9, 2 and 5 tokens
    scheduled together, pages shared out by the manager) greedy-decodes each request as
    ``generate`` does for it alone. Mistral's sliding window (4) is shorter than the requests.
    About 40 s a model on the CPU: the sweep tier."""
    from transformers import GenerationConfig

    from xattn_ref.zoo.hf_models import causal_lm

    model = causal_lm(family)
    requests = [[5, 9, 3, 7, 1, 8, 2, 6, 4], [11, 12], [20, 21, 22, 23, 24]]
    config = GenerationConfig(max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0)
    batched = model.generate_batch(inputs=requests, generation_config=config, progress_bar=False)
    got = [list(batched[f"req_{n}"].generated_tokens) for n in range(len(requests))]
    alone = [model.generate(torch.tensor([r]), generation_config=config)[0, len(r) :] for r in requests]
    assert got == [a.tolist() for a in alone]


def test_a_model_property_on_another_kinds_call_is_a_one_line_error():
    from xattn_ref.checks import check
    from xattn_ref.errors import XattnArgumentError
    from xattn_ref.kinds import KINDS, kernel_call
    from xattn_ref.zoo.kernels import sdpa_kernel

    case = KINDS["kernel"].probe({}, torch.float32, "cpu")
    with pytest.raises(XattnArgumentError, match=r"cached_decoding checks a whole model \(--kind model\)"):
        check("cached_decoding", kernel_call(sdpa_kernel), case)
