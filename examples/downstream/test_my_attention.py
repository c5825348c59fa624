"""This project's own tests, written with xattn_ref's public strategies and checks."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from my_attention import gqa_causal_attention

import xattn_ref as xr

# our shapes: B = 2, H = 4 query heads over 1 or 2 kv heads, D = 16, up to 32 cached keys
CASES = xr.attention_cases(
    dtypes=[torch.float32, torch.float64],
    batch_size=2,
    num_heads=4,
    num_kv_heads=st.sampled_from([1, 2]),
    head_dim=16,
    max_kv_len=32,
    causal="bottom_right",
)
KERNEL = xr.kernel_call(gqa_causal_attention, dialect=xr.Dialect(heads="gqa", causal="bottom_right"))


@settings(max_examples=40, deadline=None)
@given(CASES)
def test_is_finite_and_zero_where_no_key_is_allowed(case):
    out = gqa_causal_attention(case.q, case.k, case.v, case.mask)  # mask: True = a real token
    assert out.isfinite().all(), case.snippet()
    assert (out[case.empty_rows] == 0).all(), case.snippet()  # empty_rows: (B, H, Lq)


@settings(max_examples=10, deadline=None)
@given(CASES)
def test_the_reference_speaks_the_same_dialect(case):
    expected = xr.attention(case.q, case.k, case.v, case.mask, causal="bottom_right")
    assert expected.shape == case.q.shape[:3] + case.v.shape[-1:]


@settings(max_examples=40, deadline=None)
@given(CASES)
def test_the_suites_checks_hold(case):
    # reference_agreement compares with the float64 reference within the written tolerance model
    # (a fixed atol fails at large logits, or passes a wrong kernel at small ones)
    for prop in ("finite_grad", "empty_rows_zero", "reference_agreement"):
        xr.check(prop, KERNEL, case)  # raises PropertyFailure, with the values and a rebuild, if not
