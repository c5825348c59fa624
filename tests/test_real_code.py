"""Real attention code without glue: what a target's user declares (factory arguments, the call's
keywords, the output's place, the gradient path, the kv-head mapping, fixed causality, the
empty-row policy of layers, memory layouts) turns a false alarm or an unreachable callable into a
verdict, and the same declaration still catches the defect it should."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _support import run, without_xattn_environment
from targets.real_code import (
    CausalAttend,
    CheckpointedCrossAttention,
    MeanOfPaddingCrossAttention,
    flex_block_mask_kernel,
    flex_partial_blocks_as_full,
    tiled_gqa_kernel,
    with_lse,
)

from xattn_ref.cli import main
from xattn_ref.errors import TargetLoadError, UsageError
from xattn_ref.kinds import resolve_options
from xattn_ref.targets import load_target
from xattn_ref.zoo.kernels import sdpa_gqa_kernel
from xattn_ref.zoo.known_bad import neg_inf_softmax, stride_ignoring_kernel

HERE = Path(__file__).parent


def test_a_factory_is_called_with_the_literal_arguments_of_its_spec():
    spec = "xattn_ref.zoo.adapters:cross_attention_layer(dim=8, heads=4, seed=3)"
    target = load_target(spec, kind="layer", options={"dim": 8, "context_dim": 8})
    assert target.arguments == ((), {"dim": 8, "heads": 4, "seed": 3})
    assert target.call.fn_for(torch.float32, "cpu").heads == 4
    assert target.cli_args()[0] == spec  # the reproduce line names it as given


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("xattn_ref.zoo.adapters:decoder_layer(dim=foo)", "argument foo is not a Python literal"),
        ("xattn_ref.zoo.adapters:decoder_layer(dim=16", "no closing '\\)'"),
        ("xattn_ref.zoo.adapters:decoder_layer(**kw)", "must be plain"),
    ],
)
def test_a_factory_argument_that_is_not_a_literal_is_a_one_line_error(spec, words):
    with pytest.raises(TargetLoadError, match=words):
        load_target(spec, kind="layer", options={"dim": 16, "context_dim": 16})


def test_a_module_class_that_accepts_dtype_and_device_is_built_once_with_one_set_of_weights():
    # nn.MultiheadAttention(..., device=None, dtype=None): built per dtype it would draw new
    # weights, and dtype_consistency would compare two different layers
    target = load_target("torch.nn:MultiheadAttention(16, 2, batch_first=True)", kind="layer",
                         options={"dim": 16, "context_dim": 16})  # fmt: skip
    w32, w64 = (target.fn_for(d, "cpu").in_proj_weight for d in (torch.float32, torch.float64))
    assert torch.equal(w32.double(), w64)


MHA_CALL = "x, context, context, key_padding_mask=~context_mask, need_weights=False"


def test_a_layer_with_its_own_argument_names_is_called_by_keyword():
    mha = torch.nn.MultiheadAttention(16, 2, batch_first=True)
    for prop in ("padding_invariance", "compaction_equivalence", "dtype_consistency"):
        r = run(prop, mha, kind="layer", dim=16, call=MHA_CALL, max_examples=15)
        assert r.status == "passed", (prop, r.message)
    # without ~ the mask means the opposite: the padding is attended, the real tokens masked
    wrong = run("padding_invariance", mha, kind="layer", dim=16, call=MHA_CALL.replace("~", ""))
    assert wrong.status == "failed"


@pytest.mark.parametrize(
    ("call", "words"),
    [
        ("x, context", "does not pass context_mask"),
        ("x, context, mask=context_mask + 1", "is neither a role"),
        ("x, context, **context_mask", "no \\* or \\*\\* arguments"),
        ("x, context, (context_mask", "is not a Python argument list"),
    ],
)
def test_a_call_that_is_not_an_argument_list_of_the_roles_is_a_usage_error(call, words):
    with pytest.raises(UsageError, match=words):
        resolve_options("layer", {"dim": 16, "call": call})


def test_the_output_is_selected_from_a_tuple_by_index():
    assert run("reference_agreement", with_lse, select="1").status == "passed"
    default = run("reference_agreement", with_lse)  # the first element: the lse
    assert default.status == "error" and "returned shape" in default.message
    missing = run("finite_output", with_lse, select="2")
    assert missing.status == "error" and "--select 2" in missing.message


def test_reentrant_checkpointing_needs_backward_and_is_judged_with_it():
    layer = CheckpointedCrossAttention()
    call = "x, context, padding=~context_mask"
    plain = run("finite_grad", layer, kind="layer", dim=16, call=call)
    assert plain.status == "error" and "--backward" in plain.message
    declared = run("finite_grad", layer, kind="layer", dim=16, call=call, backward=True)
    assert declared.status == "passed", declared.message
    assert all(p.grad is None for p in layer.parameters())  # nothing accumulates in the target


def test_a_layer_that_averages_the_padding_of_an_empty_context_declares_finite_empty_rows():
    layer = MeanOfPaddingCrossAttention()
    assert run("padding_invariance", layer, kind="layer", dim=16).status == "failed"
    for prop in ("padding_invariance", "batch_independence", "dtype_consistency"):
        r = run(prop, layer, kind="layer", dim=16, empty_rows="finite", max_examples=20)
        assert r.status == "passed", (prop, r.message)


def test_the_finite_policy_of_layers_still_catches_nan():
    from xattn_ref.zoo.known_bad.layers import neg_inf_softmax_layer

    r = run("finite_output", neg_inf_softmax_layer(), kind="layer", dim=16, empty_rows="finite")
    assert r.status == "failed"


def test_both_kv_head_mappings_are_conventions_the_user_declares():
    # 60 examples: 1 < H_kv < H, where the mappings differ, is about one case in four
    def agreement(fn, mapping):
        return run("reference_agreement", fn, heads="gqa", gqa_mapping=mapping, max_examples=60).status

    assert agreement(tiled_gqa_kernel, "tile") == "passed"
    assert agreement(tiled_gqa_kernel, "interleave") == "failed"
    assert agreement(sdpa_gqa_kernel, "interleave") == "passed"
    assert agreement(sdpa_gqa_kernel, "tile") == "failed"


def test_a_kernel_causal_by_construction_for_short_queries_is_judged_as_documented():
    attend = CausalAttend()
    options = {"causal": "bottom_right", "fixed_causal": True, "short_queries": True}
    for prop in ("reference_agreement", "batch_independence", "finite_grad"):
        r = run(prop, attend, **options)
        assert r.status == "passed", (prop, r.message)
    assert run("reference_agreement", attend, causal="bottom_right", fixed_causal=True).status == "error"
    assert run("reference_agreement", attend, causal="top_left", fixed_causal=True,
               short_queries=True).status == "failed"  # fmt: skip
    with pytest.raises(UsageError, match="fixed_causal needs a causal alignment"):
        resolve_options("kernel", {"fixed_causal": True})


def test_a_kernel_that_ignores_strides_is_caught_and_the_contiguous_contract_can_be_declared():
    r = run("reference_agreement", stride_ignoring_kernel)
    assert r.status == "failed" and "memory" in r.case, r.case  # the minimal example names it
    assert run("reference_agreement", stride_ignoring_kernel, memory="contiguous").status == "passed"
    assert run("reference_agreement", neg_inf_softmax, memory="contiguous").status == "failed"


def test_every_memory_layout_is_drawn_and_laid_out_as_its_name_says():
    from xattn_ref.cases import MEMORY_LAYOUTS, CaseSpec, MaskSpec, SlicePattern
    from xattn_ref.dialects import Dialect

    mask = MaskSpec("key_padding", (SlicePattern("right_padding", 1),) * 2)
    for memory in MEMORY_LAYOUTS:
        case = CaseSpec(
            batch_size=2,
            num_heads=3,
            q_len=4,
            kv_len=5,
            head_dim=8,
            value_dim=8,
            dtype=torch.float32,
            device="cpu",
            seed=0,
            logit_std=(1.0,) * 2,
            value_std=(1.0,) * 2,
            mask=mask,
            memory=memory,
        ).build()
        plain = CaseSpec(
            batch_size=2,
            num_heads=3,
            q_len=4,
            kv_len=5,
            head_dim=8,
            value_dim=8,
            dtype=torch.float32,
            device="cpu",
            seed=0,
            logit_std=(1.0,) * 2,
            value_std=(1.0,) * 2,
            mask=mask,
        ).build()
        args, _ = Dialect().arguments(case)
        for name in ("q", "k", "v"):
            assert torch.equal(args[name], getattr(plain, name))
            assert args[name].is_contiguous() == (memory in ("contiguous", "broadcast_mask")), (memory, name)
        assert torch.equal(args["mask"], plain.mask.expand_as(args["mask"]))
        assert (0 in args["mask"].stride()) == (memory == "broadcast_mask")
    fused_k = Dialect().arguments(
        CaseSpec(
            batch_size=2,
            num_heads=3,
            q_len=4,
            kv_len=5,
            head_dim=8,
            value_dim=8,
            dtype=torch.float32,
            device="cpu",
            seed=0,
            logit_std=(1.0,) * 2,
            value_std=(1.0,) * 2,
            mask=mask,
            memory="fused",
        ).build()
    )[0]["k"]
    assert fused_k.storage_offset() > 0  # a slice of a fused projection


def test_the_cli_runs_a_real_module_class_in_one_line(capsys, monkeypatch):
    without_xattn_environment(monkeypatch)
    status = main(
        ["torch.nn:MultiheadAttention(16, 2, batch_first=True)", "--kind", "layer", "--dim", "16",
         "--call", MHA_CALL, "--dtype", "float32", "--profile", "ci", "--max-examples", "10", "--jobs", "1",
         "--quiet"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0, out
    assert "every tested property holds" in out


def test_block_masks_reach_flex_attention_and_a_dropped_mask_mod_is_caught():
    # FlexAttention is unfused and uncompiled on the CPU (slow): a few examples, float32
    block = {"mask": "block", "forward_only": True, "max_examples": 8}
    assert run("reference_agreement", flex_block_mask_kernel, **block).status == "passed"
    assert run("reference_agreement", flex_partial_blocks_as_full, **block).status == "failed"
    with pytest.raises(UsageError, match="mask block"):
        resolve_options("kernel", {"mask": "block", "key_padding": True})


def test_code_that_reads_a_2d_mask_as_key_padding_is_handed_masks_in_4d():
    attend = pytest.importorskip("x_transformers.attend").Attend()
    r = run("reference_agreement", attend, call="q, k, v, mask=four_d(mask)", max_examples=15)
    assert r.status == "passed", r.message
    # as given, a shared (Lq, Lk) mask is read as (B, Lk) and does not broadcast
    assert run("reference_agreement", attend, call="q, k, v, mask=mask", max_examples=30).status == "error"
