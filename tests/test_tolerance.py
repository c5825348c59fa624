"""The tolerance model: it admits the plain same-dtype result and rejects errors beyond it."""

from __future__ import annotations

import pytest
import torch

from xattn_ref._calls import cotangent
from xattn_ref._kernel import guarded_attention
from xattn_ref.cases import CaseSpec, MaskSpec, SlicePattern
from xattn_ref.reference import attention
from xattn_ref.tolerance import allowed_error, compare, format_pair, kernel_budget, magnitudes

LOW = [torch.float32, torch.float16, torch.bfloat16]


def make_case(dtype, logit_std=10.0):
    mask = MaskSpec("key_padding", (SlicePattern("right_padding", 5), SlicePattern("all_false")))
    return CaseSpec(2, 2, 3, 7, 8, 8, dtype, "cpu", 11, (logit_std, 1.0), (1.0, 1e-3), mask).build()


def budget_parts(case):
    g = cotangent(case, (*case.q.shape[:3], case.v.shape[-1]))
    truth = attention(case.q.double(), case.k.double(), case.v.double(), case.mask)
    plain = guarded_attention(case.q, case.k, case.v, case.mask, case.q.shape[-1] ** -0.5, case.dtype)
    mag = magnitudes(case.q, case.k, case.v, g, case.q.shape[-1] ** -0.5)["out"]
    return truth, plain, mag


@pytest.mark.parametrize("dtype", LOW)
def test_the_plain_result_is_within_its_own_budget(dtype):
    case = make_case(dtype)
    truth, plain, mag = budget_parts(case)
    assert compare("out", plain, truth, truth, plain, mag, dtype).ok


def test_an_error_of_one_percent_is_caught_in_float32():
    case = make_case(torch.float32, logit_std=1.0)
    truth, plain, mag = budget_parts(case)
    bad = plain.clone()
    bad[0, 0, 0, 0] += 0.01 * truth[0].abs().max()
    result = compare("out", bad, truth, truth, plain, mag, torch.float32)
    assert not result.ok
    assert "out[0, 0, 0, 0]" in result.explain() and "batch element 0" in result.explain()


@pytest.mark.parametrize("dtype", LOW)
def test_a_small_batch_element_cannot_hide_behind_a_large_one(dtype):
    mask = MaskSpec("key_padding", (SlicePattern("all_true"), SlicePattern("all_true")))
    case = CaseSpec(2, 1, 3, 5, 8, 8, dtype, "cpu", 5, (1.0, 1.0), (1e3, 1e-3), mask).build()
    truth, plain, mag = budget_parts(case)
    bad = plain.clone()
    bad[1, 0, 0, 0] += 0.5 * truth[1].abs().max()  # far below batch element 0's budget
    result = compare("out", bad, truth, truth, plain, mag, dtype)
    assert not result.ok and "batch element 1" in result.explain()


@pytest.mark.parametrize("dtype", LOW)
def test_an_error_just_beyond_the_budget_is_caught_at_any_logits(dtype):
    case = make_case(dtype, logit_std=100.0)
    truth, plain, mag = budget_parts(case)
    budget = allowed_error(truth, plain, mag, dtype)
    bad = truth.clone()
    bad[0, 1, 2, 3] += 1.01 * budget[0]
    assert not compare("out", bad, truth, truth, plain, mag, dtype).ok


def test_nan_is_never_within_budget():
    case = make_case(torch.float32)
    truth, plain, mag = budget_parts(case)
    bad = plain.clone()
    bad[1, 0, 0, 0] = float("nan")
    assert not compare("out", bad, truth, truth, plain, mag, torch.float32).ok


def test_the_budget_is_per_batch_element_and_scales_with_the_dtype():
    case = make_case(torch.float16)
    truth, plain, mag = budget_parts(case)
    half = allowed_error(truth, plain, mag, torch.float16)
    single = allowed_error(truth, plain, mag, torch.float32)
    assert half.shape == (2,) and bool((half > single).all())
    # batch element 1 has values 1000 times smaller, and so a budget far smaller
    assert half[1] < half[0] / 100


def test_factor_two_doubles_the_budget():
    case = make_case(torch.bfloat16)
    truth, plain, mag = budget_parts(case)
    assert torch.allclose(
        allowed_error(truth, plain, mag, torch.bfloat16, factor=2),
        2 * allowed_error(truth, plain, mag, torch.bfloat16),
    )


def test_a_non_finite_plain_result_does_not_make_the_budget_infinite():
    case = make_case(torch.float32, logit_std=1.0)
    truth, plain, mag = budget_parts(case)
    broken_plain = plain.clone()
    broken_plain[0, 0, 0, 0] = float("nan")
    assert bool(allowed_error(truth, broken_plain, mag, torch.float32).isfinite().all())


def test_kernel_budget_is_the_same_model():
    case = make_case(torch.float16)
    truth, plain, mag = budget_parts(case)
    g = cotangent(case, (*case.q.shape[:3], case.v.shape[-1]))
    budget = kernel_budget(case, g, grads=True)
    assert torch.equal(budget.truth["out"], truth)
    assert torch.allclose(budget.allowed("out"), allowed_error(truth, plain, mag, torch.float16))
    assert set(budget.names) == {"out", "dq", "dk", "dv"}


@pytest.mark.parametrize(
    ("a", "b", "shown"),
    [
        (0.685649, 0.68564900279, ("0.685649", "0.68564900279")),
        (1.0, 2.0, ("1", "2")),
        (1.0, 1.0, ("1", "1")),
    ],
)
def test_values_show_enough_digits_to_see_the_difference(a, b, shown):
    assert format_pair(a, b) == shown
    x, y = format_pair(a, b)
    assert (x != y) == (a != b)
