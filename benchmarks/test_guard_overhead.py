"""Guard overhead: ``safe_sdpa`` against ``scaled_dot_product_attention``, float32 on the CPU.

Sizes: prefill B=8, H=8, Lq=Lk=512, D=64; decoding Lq=1, Lk=512. Key-padding masks
(B, 1, 1, Lk) with random lengths; two of the eight contexts are entirely padding.
pytest-benchmark prints, for each group, each row's time relative to the fastest in the same
run: those ratios are the overhead.

    tox -e bench        # or: pytest benchmarks --benchmark-enable
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from xattn_ref.guard import safe_sdpa

B, H, L, D = 8, 8, 512, 64
IMPLS = {"sdpa": F.scaled_dot_product_attention, "safe_sdpa": safe_sdpa}


def inputs(q_len: int, grad: bool):
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(B, H, q_len, D, generator=gen).requires_grad_(grad)
    k = torch.randn(B, H, L, D, generator=gen).requires_grad_(grad)
    v = torch.randn(B, H, L, D, generator=gen).requires_grad_(grad)
    lengths = torch.randint(1, L + 1, (B,), generator=gen)
    lengths[:2] = 0  # two contexts entirely padding
    mask = (torch.arange(L) < lengths[:, None]).view(B, 1, 1, L)
    return q, k, v, mask


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("size", ["prefill", "decode"])
def test_forward(benchmark, impl, size):
    benchmark.group = f"{size} forward"
    q, k, v, mask = inputs(L if size == "prefill" else 1, grad=False)
    fn = IMPLS[impl]
    with torch.inference_mode():
        benchmark(fn, q, k, v, attn_mask=mask)


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("size", ["prefill", "decode"])
def test_forward_backward(benchmark, impl, size):
    benchmark.group = f"{size} forward+backward"
    q, k, v, mask = inputs(L if size == "prefill" else 1, grad=True)
    fn = IMPLS[impl]

    def step():
        fn(q, k, v, attn_mask=mask).sum().backward()

    benchmark(step)
