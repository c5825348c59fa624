"""The adapters for real APIs (Hugging Face's attention interface, packed variable-length
kernels, FlexAttention), checked against known-bad implementations and, where they install on
the CPU, the real packages (skipped with the reason when absent: ``pip install -e ".[real]"``)."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from _support import SETTINGS, not_holding, run

from xattn_ref.cases import CaseSpec
from xattn_ref.checks import reference_agreement
from xattn_ref.conventions import hf_module, pack, unpack
from xattn_ref.kinds import KINDS
from xattn_ref.plan import load, select_properties
from xattn_ref.precision import FLOAT32, collected
from xattn_ref.profiles import profile_settings
from xattn_ref.runner import run_property
from xattn_ref.zoo.adapters import flex_attention_kernel

HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None
needs_transformers = pytest.mark.skipif(
    not HAS_TRANSFORMERS, reason='transformers is not installed (pip install -e ".[real]")'
)
HF_SDPA = "transformers.integrations.sdpa_attention:sdpa_attention_forward"
HF_EAGER = "transformers.models.llama.modeling_llama:eager_attention_forward"


def verdicts(spec, kind, options, props=None, dtypes=(torch.float64, torch.float32, torch.float16,
             torch.bfloat16), settings=SETTINGS):  # fmt: skip
    target = load(spec, kind, options)
    out = {}
    for prop in props or select_properties(KINDS[kind], None, None):
        for dtype in dtypes:
            r = run_property(target, prop, dtype=dtype, device="cpu", settings=settings)
            out[prop, str(dtype)[6:]] = r
    return out


def test_pack_and_unpack_are_inverse_and_keep_zero_length_sequences():
    t = torch.randn(3, 2, 5, 4)
    packed, cu, longest = pack(t, torch.tensor([2, 0, 5]))
    assert packed.shape == (7, 2, 4) and cu.tolist() == [0, 2, 2, 7] and longest == 5
    back = unpack(packed, cu, 5)
    assert (
        torch.equal(back[0, :, :2], t[0, :, :2]) and back[1].abs().max() == 0 and torch.equal(back[2], t[2])
    )


def test_hf_module_says_the_grouping_and_is_in_eval_mode():
    module = hf_module(4, is_causal=True)
    assert module.num_key_value_groups == 4 and module.is_causal and not module.training


@needs_transformers
@pytest.mark.upstream
@pytest.mark.sweep
@pytest.mark.parametrize(
    "options",
    [
        {"mask": "bool"},  # as transformers 5 builds masks for SDPA: exact zeros for empty rows
        {"mask": "sentinel", "empty_rows": "finite"},  # finfo.min masks: empty rows average v
        {"mask": "bool", "causal": "top_left", "causal_in_mask": True, "self_attention": True},
    ],
    ids=["bool", "finfo.min-finite", "causal+left-padding"],
)
def test_hugging_faces_sdpa_attention_forward_passes_every_property(options):
    # a causal mask cannot be compacted away (compaction_equivalence needs padding alone)
    cannot = ["compaction_equivalence"] if options.get("causal_in_mask") else []
    assert not not_holding(verdicts(HF_SDPA, "hf", options).values(), cannot)


@needs_transformers
@pytest.mark.upstream
def test_hugging_faces_sdpa_with_finfo_min_masks_fails_the_zero_policy():
    r = verdicts(HF_SDPA, "hf", {"mask": "sentinel"}, ["empty_rows_zero"], (torch.float32,))
    assert r["empty_rows_zero", "float32"].status == "failed"


@needs_transformers
@pytest.mark.upstream
@pytest.mark.sweep
def test_hugging_faces_eager_attention_is_nan_in_float64_and_float16_and_float32_in_float64():
    """Real findings, verified by hand (docs/real-libraries.md): ``finfo(float64).min`` becomes
    ``-inf`` in eager's float32 softmax (NaN for an all-padding row); in float16 ``-65504 +
    logit`` overflows to ``-inf`` for padded logits below -16. The float64 path computes its
    softmax in float32: judged at float32's unit there, and noted, not failed."""
    hundred = profile_settings("ci", max_examples=100)  # the float16 overflow needs a rare case
    props = ["finite_output", "reference_agreement"]
    r = verdicts(HF_EAGER, "hf", {"empty_rows": "finite"}, props, settings=hundred)
    status = {key: res.status for key, res in r.items()}
    assert status["finite_output", "float64"] == status["finite_output", "float16"] == "failed"
    assert status["finite_output", "float32"] == status["finite_output", "bfloat16"] == "passed"
    assert status["reference_agreement", "float32"] == "passed"
    assert "nan" in r["finite_output", "float64"].message
    # no empty row, no NaN: the float64 path is only as accurate as float32
    case = CaseSpec(
        batch_size=2,
        num_heads=4,
        q_len=3,
        kv_len=9,
        head_dim=8,
        value_dim=8,
        dtype=torch.float64,
        device="cpu",
        seed=0,
        logit_std=(1.0, 1.0),
        value_std=(1.0, 1.0),
        mask=None,
        num_kv_heads=2,
        scale=0.3,
    ).build()
    with collected() as notes:
        assert reference_agreement(load(HF_EAGER, "hf", {"empty_rows": "finite"}).call, case)
    assert (FLOAT32, "_softmax") in notes


def test_flex_attention_forward_passes_on_the_cpu():
    """FlexAttention (eager, unfused on the CPU: slow, so few examples) with the mask as a
    ``mask_mod`` and a ``BlockMask``; forward-only, as FlexAttention has no CPU backward. Its
    float64 run cannot be watched for float32 arithmetic (a higher-order operator, compiled):
    it is judged at float64's unit, not failed as a target error."""
    props = ["empty_rows_zero", "reference_agreement"]
    spec = "xattn_ref.zoo.adapters:flex_attention_kernel"
    r = verdicts(spec, "kernel", {"forward_only": True}, props, (torch.float64, torch.float32),
                 settings=profile_settings("ci", max_examples=6))  # fmt: skip
    for (prop, dtype), res in r.items():
        assert res.status == "passed", (prop, dtype, res.message)
    assert flex_attention_kernel.__name__ == "flex_attention_kernel"


def test_torchs_paged_flex_attention_holds_on_a_finite_cache_and_nan_in_unused_slots_reaches_it():
    """A real finding, verified by hand (docs/real-libraries.md, finding 9): torch's paged
    FlexAttention, eager on the CPU, multiplies the masked slots' values by a weight of 0, so NaN
    past a sequence's length in its last page reaches the output; with those slots zero it holds
    (shuffled and shared pages, pages of 1, 3, 5 and 16)."""
    from xattn_ref.zoo.adapters import flex_paged_kernel

    clean = run("reference_agreement", flex_paged_kernel, kind="paged", poison="none", max_examples=8)
    assert clean.status == "passed" and clean.applied, clean.message
    poisoned = run("finite_output", flex_paged_kernel, kind="paged", max_examples=8)
    assert poisoned.status == "failed" and "nan" in poisoned.message, poisoned.message


def test_a_packed_kernel_is_called_with_cu_seqlens_and_zero_length_sequences():
    seen = []

    def spy(q, k, v, cu_q, cu_k, max_q, max_k):
        from xattn_ref.zoo.kernels import varlen_reference_kernel

        seen.append((q.shape[0] - int(cu_q[-1]), cu_k.tolist(), max_k, cu_q.diff().tolist()))
        assert bool(q[int(cu_q[-1]) :].isnan().all())  # the NaN tail
        return varlen_reference_kernel(q, k, v, cu_q, cu_k, max_q, max_k)

    r = run("finite_output", spy, kind="varlen", max_examples=60)
    assert r.status == "passed"
    from xattn_ref.zoo.known_bad import varlen_reads_next_key

    # equivalence with each sequence alone catches the leak too
    assert run("compaction_equivalence", varlen_reads_next_key, kind="varlen").status == "failed"
    assert any(cu[i] == cu[i + 1] for _, cu, _, _ in seen for i in range(len(cu) - 1))  # zero-length ones
    # packed as servers pack: a prefill next to a one-query decode step, and fewer queries than sequences
    assert any(1 in q_lens and max(q_lens) > 1 for *_, q_lens in seen)
    assert any(sum(q_lens) < len(q_lens) for *_, q_lens in seen)
    assert {tail for tail, *_ in seen} == {0, 1, 2}  # no tail, or one or two rows of NaN
    # a kernel that reads the keys to the end of the buffer meets the tail; declared tail-free, it holds
    from xattn_ref.zoo.known_bad import varlen_reads_to_the_end

    assert run("finite_output", varlen_reads_to_the_end, kind="varlen").status == "failed"
    assert run("finite_output", varlen_reads_to_the_end, kind="varlen", tail="none").status == "passed"


ENCODERS = [
    "xattn_ref.zoo.adapters:transformer_encoder_layer()",
    "xattn_ref.zoo.adapters:self_attention_layer()",
]


@pytest.mark.sweep
@pytest.mark.parametrize(
    "spec", ENCODERS + (["xattn_ref.zoo.adapters:hf_bert_layer()"] if HAS_TRANSFORMERS else [])
)
def test_self_attention_layers_pass_with_padded_queries(spec):
    assert not not_holding(verdicts(spec, "encoder", {"dim": 16}).values())


@pytest.mark.upstream
@pytest.mark.parametrize("spec", ENCODERS)
def test_torchs_inference_fast_path_gives_nan_for_a_fully_padded_sequence(spec):
    """A real finding, verified by hand (docs/real-libraries.md): under ``torch.no_grad()`` (how forward-only
    targets run) ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer`` take their fast path,
    which returns NaN for a sequence that is all padding; with autograd on they return finite
    values."""
    r = verdicts(spec, "encoder", {"dim": 16, "forward_only": True}, ["finite_output"], (torch.float32,))
    res = r["finite_output", "float32"]
    assert res.status == "failed" and "nan" in res.message and "all_false" in (res.case or ""), res.message


def test_a_layer_that_pools_the_padding_is_caught():
    from xattn_ref.zoo.known_bad import pooled_with_padding_layer

    r = run("padding_invariance", pooled_with_padding_layer(), kind="encoder", dim=16)
    assert r.status == "failed", r.message
    # the encoder's compaction compares each sequence's real tokens with the sequence alone
    r = run("compaction_equivalence", pooled_with_padding_layer(), kind="encoder", dim=16)
    assert r.status == "failed", r.message
    assert run("finite_output", pooled_with_padding_layer(), kind="encoder", dim=16).status == "passed"


def test_an_sdpa_backend_leaves_out_the_cases_it_does_not_take_and_says_how_many():
    """SDPA's flash backend on the CPU takes no Dv != D: those examples are left out and counted,
    the rest are judged (a backend that took none would be not-applicable, never passed)."""
    from xattn_ref.zoo.adapters import sdpa

    r = run("reference_agreement", sdpa("flash"), torch.float16)
    assert r.status == "passed", r.message
    assert "the target did not take" in r.message and "SDPA's flash backend takes no such input" in r.message
    assert 0 < r.applied < r.examples


@pytest.mark.sweep
def test_a_flex_attention_sliding_window_holds_and_one_key_too_wide_is_caught():
    """FlexAttention with a window written as its users write it (a mask_mod on the indices);
    the same window one key wider on the left fails (slow on the CPU: eager, unfused)."""
    from xattn_ref.zoo.adapters import flex_window_kernel

    def too_wide(q, k, v, mask, window_size=(-1, -1)):
        left, right = window_size
        return flex_window_kernel(q, k, v, mask, (left + 1 if left >= 0 else left, right))

    options = {"window": True, "forward_only": True, "max_examples": 15}
    assert run("reference_agreement", flex_window_kernel, **options).status == "passed"
    assert run("reference_agreement", too_wide, **options).status == "failed"
