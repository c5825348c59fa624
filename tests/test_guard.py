"""The guard: known-bad kernels pass every kernel property once guarded, and fail without."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _support import not_holding, run

from xattn_ref._devices import ALL_DTYPES
from xattn_ref.guard import guard, safe_sdpa
from xattn_ref.kinds import KINDS
from xattn_ref.plan import select_properties
from xattn_ref.zoo.known_bad import KNOWN_BAD, finfo_min_fill, neg_inf_softmax

FIXED_BY_THE_GUARD = [
    "neg_inf_softmax",
    "finfo_min_fill",
    "zero_after_neg_inf",
    "unguarded_long_context",
]  # not minus_1e9_fill: the guard fixes its float16 empty rows, not its float64 sentinel, which
# logits shifted below -1e9 (float64 reaches -1e12) sit under (padding_invariance fails)
SWEEP = pytest.mark.sweep


# Correct (guarded) kernels run every property in every dtype: 10 examples each keep this fast;
# the no-false-failure sweep (scripts/false_failures.py) runs thousands.
DEFAULT_PROPERTIES = tuple(select_properties(KINDS["kernel"], None, None))  # no opt-in


def verdicts(kernel, key, props=DEFAULT_PROPERTIES, max_examples=10):
    return {
        (prop, d): run(prop, kernel, d, name=key, max_examples=max_examples)
        for prop in props
        for d in ALL_DTYPES
    }


# every property x dtype of one guarded kernel in the default tier (the seed's defect), the other
# kernels in the sweep (tox -e sweep)
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=() if n == "neg_inf_softmax" else SWEEP) for n in FIXED_BY_THE_GUARD]
)
def test_guarded_known_bad_kernels_pass_every_property(name):
    assert not not_holding(verdicts(guard(KNOWN_BAD[name]), f"guarded-{name}").values())


# unguarded_long_context (> 32 keys) is slow to draw; test_meta catches it in the default tier
@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=SWEEP if n == "unguarded_long_context" else ()) for n in FIXED_BY_THE_GUARD],
)
def test_the_same_kernels_fail_without_the_guard(name):
    props = ["finite_output", "finite_grad", "empty_rows_zero"]
    results = verdicts(KNOWN_BAD[name], name, props=props, max_examples=30)
    assert any(r.status == "failed" for r in results.values())


def test_safe_sdpa_passes_every_property_in_sync_mode_too():
    synced = guard(lambda q, k, v, mask: F.scaled_dot_product_attention(q, k, v, attn_mask=mask), sync=True)
    assert not not_holding(verdicts(synced, "sync-sdpa").values())


def test_safe_sdpa_matches_sdpa_where_rows_are_not_empty_and_is_zero_elsewhere():
    q, k, v = (torch.randn(2, 2, 3, 8) for _ in range(3))
    mask = torch.tensor([[True, True, False], [False, False, False]]).view(2, 1, 1, 3)
    out = safe_sdpa(q, k, v, attn_mask=mask)
    torch.testing.assert_close(out[0], F.scaled_dot_product_attention(q, k, v, attn_mask=mask)[0])
    assert torch.equal(out[1], torch.zeros_like(out[1]))


def test_additive_float_masks_are_guarded():
    q, k, v = (torch.randn(1, 1, 2, 4, requires_grad=True) for _ in range(3))
    bias = torch.tensor([[0.0, -1.0], [float("-inf"), float("-inf")]])
    before = bias.clone()
    out = guard(lambda q, k, v, m: ((q @ k.transpose(-2, -1)) / 2 + m).softmax(-1) @ v)(q, k, v, bias)
    assert torch.equal(out[0, 0, 1], torch.zeros(4)) and out.isfinite().all()
    out.sum().backward()
    assert all(t.grad is not None and t.grad.isfinite().all() for t in (q, k, v))
    assert torch.equal(bias, before)


def test_none_mask_calls_fn_untouched():
    calls = []

    @guard
    def fn(q, k, v, mask):
        calls.append(mask)
        return v

    x = torch.randn(1, 1, 2, 2)
    assert fn(x, x, x, None) is x and calls == [None]


@pytest.mark.parametrize("sync", [False, True])
def test_the_callers_mask_is_never_modified(sync):
    mask = torch.tensor([[True, False], [False, False]])
    before = mask.clone()
    guard(neg_inf_softmax, sync=sync)(*(torch.randn(1, 1, 2, 4) for _ in range(3)), mask)
    assert torch.equal(mask, before)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_dtype_is_preserved(dtype):
    x = torch.randn(1, 1, 2, 4, dtype=dtype)
    assert guard(finfo_min_fill)(x, x, x, torch.tensor([False, False])).dtype == dtype


def test_bad_masks_get_a_one_line_error_naming_the_argument():
    x = torch.randn(1, 1, 2, 4)
    with pytest.raises(ValueError, match=r"^attn_mask must be bool \(True = may attend\) or floating point"):
        safe_sdpa(x, x, x, attn_mask=torch.ones(2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"^sync must be True or False"):
        guard(neg_inf_softmax, sync="yes")  # type: ignore[arg-type]


def test_safe_sdpa_compiles_without_graph_breaks():
    compiled = torch.compile(safe_sdpa, backend="aot_eager", fullgraph=True)
    q, k, v = (torch.randn(2, 2, 3, 8, requires_grad=True) for _ in range(3))
    mask = torch.tensor([[True, False, True], [False, False, False]]).view(2, 1, 1, 3)
    out = compiled(q, k, v, attn_mask=mask)
    torch.testing.assert_close(out, safe_sdpa(q, k, v, attn_mask=mask))
    out.sum().backward()
    assert q.grad is not None and q.grad[1].eq(0).all() and q.grad.isfinite().all()


def test_guard_compiles_in_sync_mode_without_graph_breaks():
    compiled = torch.compile(guard(neg_inf_softmax, sync=True), backend="aot_eager", fullgraph=True)
    x = torch.randn(1, 1, 2, 4)
    out = compiled(x, x, x, torch.tensor([[True, False], [False, False]]))
    assert out.isfinite().all() and out[0, 0, 1].eq(0).all()


def test_safe_sdpa_in_inference_mode_zeroes_rows_and_leaves_inputs_alone():
    q, k, v = (torch.randn(2, 2, 3, 8) for _ in range(3))
    mask = torch.tensor([[True, True, False], [False, False, False]]).view(2, 1, 1, 3)
    before = [t.clone() for t in (q, k, v, mask)]
    with torch.inference_mode():
        out = safe_sdpa(q, k, v, attn_mask=mask)
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    assert all(torch.equal(a, b) for a, b in zip(before, (q, k, v, mask)))
