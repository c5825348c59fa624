"""The reference against an independent oracle: NumPy float64, row by row, over allowed keys."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings

from xattn_ref.reference import attention
from xattn_ref.strategies import attention_cases


def oracle(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Softmax attention written out one query row at a time; an empty row gives zeros."""
    b_, h_, lq, d = q.shape
    out = np.zeros((b_, h_, lq, v.shape[-1]))
    for b in range(b_):
        for h in range(h_):
            for i in range(lq):
                keys = [j for j in range(k.shape[2]) if mask[b, h, i, j]]
                if not keys:
                    continue
                logits = [float(np.dot(q[b, h, i], k[b, h, j])) / math.sqrt(d) for j in keys]
                top = max(logits)
                weights = [math.exp(x - top) for x in logits]
                total = sum(weights)
                for w, j in zip(weights, keys):
                    out[b, h, i] += (w / total) * v[b, h, j]
    return out


@settings(max_examples=60, deadline=None)
@given(attention_cases(dtypes=[torch.float64], max_kv_len=40))
def test_reference_matches_the_oracle(case):
    got = attention(case.q, case.k, case.v, case.mask).numpy()
    want = oracle(case.q.numpy(), case.k.numpy(), case.v.numpy(), case.full_mask.numpy())
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12 * max(1.0, np.abs(want).max()))


@settings(max_examples=15, deadline=None)
@given(attention_cases(dtypes=[torch.float64], max_kv_len=6, head_dims=(3,), logit_stds=(1.0,)))
def test_reference_passes_gradcheck(case):
    q, k, v = (t.clone().requires_grad_(True) for t in (case.q, case.k, case.v))
    assert torch.autograd.gradcheck(lambda q, k, v: attention(q, k, v, case.mask), (q, k, v))


def test_empty_rows_give_exact_zeros_and_zero_finite_gradients():
    q, k, v = (torch.randn(2, 1, 3, 4, requires_grad=True) for _ in range(3))
    mask = torch.tensor([[True, False, True], [False, False, False]]).view(2, 1, 1, 3)
    out = attention(q, k, v, mask)
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    (out[1].sum() * 3).backward()
    for grad in (q.grad, k.grad, v.grad):
        assert grad is not None and torch.equal(grad, torch.zeros_like(grad))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_returns_the_input_dtype_and_leaves_inputs_alone(dtype):
    q, k, v = (torch.randn(1, 2, 3, 4, dtype=dtype) for _ in range(3))
    mask = torch.tensor([True, False, False])
    before = [t.clone() for t in (q, k, v, mask)]
    out = attention(q, k, v, mask)
    assert out.dtype == dtype and out.device == q.device
    assert all(torch.equal(a, b) for a, b in zip(before, (q, k, v, mask)))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda t: attention(t[0, 0], t, t), "q must have 4 dimensions"),
        (lambda t: attention(t, t.double(), t), "q, k and v must share one dtype"),
        (lambda t: attention(t, t, t, torch.zeros(3, 3)), "mask must be a bool tensor (True = may attend)"),
        (
            lambda t: attention(t, t, t, torch.ones(2, 2, dtype=torch.bool)),
            "does not broadcast to (B, H, Lq, Lk)",
        ),
        (lambda t: attention(t, t, t, "all"), "mask must be None or a bool torch.Tensor"),
        (lambda t: attention(t, t, t[..., :2, :]), "v must have the length Lk=3 of k"),
        (lambda t: attention(t, t, t, scale="x"), "scale must be None or a finite number"),
    ],
)
def test_bad_arguments_get_one_line_errors_naming_them(call, message):
    with pytest.raises(ValueError) as info:
        call(torch.randn(1, 1, 3, 4))
    assert message in str(info.value) and "\n" not in str(info.value)
