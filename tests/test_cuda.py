"""On a CUDA device: every SDPA backend passes in the dtypes and dialects it takes, TF32 matmuls
get TF32 budgets (and would fail float32 ones), and a kernel wrong on the device alone is caught.
Skipped, with the reason, where there is no CUDA device (``scripts/cuda_matrix.py`` runs the
gate itself there)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _support import SETTINGS

from xattn_ref._calls import cotangent
from xattn_ref._devices import unavailable_reason
from xattn_ref.cases import CaseSpec, MaskSpec, SlicePattern
from xattn_ref.runner import Result, run_property
from xattn_ref.targets import as_target
from xattn_ref.tolerance import TF32_EPS, kernel_budget, matmul_eps
from xattn_ref.zoo.adapters import sdpa
from xattn_ref.zoo.known_bad import neg_inf_softmax

NO_CUDA = unavailable_reason("cuda")
if NO_CUDA is not None:  # one skip with the reason, not one per test
    pytest.skip(NO_CUDA, allow_module_level=True)

HALF = (torch.float16, torch.bfloat16)
FUSED = {"head_dims": "fused"}
#: backend -> (dtypes it takes, the dialect it is called in)
BACKENDS: dict[str, tuple[tuple[torch.dtype, ...], dict[str, Any]]] = {
    "math": ((torch.float64, torch.float32, *HALF), {}),
    "efficient": ((torch.float32, *HALF), FUSED),
    # SDPA's flash takes no attn_mask, and is_causal only with Lq == Lk
    "flash": (HALF, {**FUSED, "mask": "none", "causal": "top_left", "self_attention": True}),
    # cuDNN with a mask gives rows that allow no key a nonzero output (seen on an H200, torch
    # 2.11, cuDNN 9.19: the test below); with is_causal alone it passes
    "cudnn": (HALF, {**FUSED, "mask": "none", "causal": "top_left"}),
}


def on_cuda(prop: str, fn: Any, dtype: torch.dtype, **options: Any) -> Result:
    return run_property(as_target(fn, **options), prop, dtype=dtype, device="cuda", settings=SETTINGS)


@pytest.mark.parametrize("prop", ["reference_agreement", "empty_rows_zero", "finite_grad"])
@pytest.mark.parametrize(
    ("backend", "dtype"), [(b, d) for b, (dtypes, _) in BACKENDS.items() for d in dtypes], ids=str
)
def test_every_sdpa_backend_passes_in_the_dtypes_it_takes(backend, dtype, prop):
    r = on_cuda(prop, sdpa(backend), dtype, **BACKENDS[backend][1])
    if prop == "empty_rows_zero" and backend in ("flash", "cudnn"):
        assert r.status == "not-applicable", r.message  # is_causal alone leaves no row empty
    else:
        assert r.status == "passed", r.message


def test_the_verdict_on_cudnn_rows_with_no_allowed_key_is_what_cudnn_gives_there():
    """SDPA picks cuDNN for half-precision inputs with a bool mask on Hopper (torch 2.11), and
    cuDNN gave a row whose mask allows no key the output 0.587, not 0 (math and efficient give
    0). The gate's verdict must match what cuDNN gives on that row, whichever it is."""
    empty = MaskSpec("key_padding", (SlicePattern("all_false"),))
    case = CaseSpec(
        batch_size=1,
        num_heads=1,
        q_len=1,
        kv_len=2,
        head_dim=8,
        value_dim=8,
        dtype=torch.float16,
        device="cuda",
        seed=0,
        logit_std=(1.0,),
        value_std=(1.0,),
        mask=empty,
    ).build()
    zero = bool((sdpa("cudnn")(case.q, case.k, case.v, case.mask) == 0).all())
    r = on_cuda("empty_rows_zero", sdpa("cudnn"), torch.float16, **FUSED)
    assert r.status == ("passed" if zero else "failed"), r.message
    if not zero:
        assert "allows no key, so the row must be exactly 0" in r.message


def matmul_kernel(q, k, v, mask):
    """Attention in three float32 matmuls, which run in TF32 when the precision allows it."""
    s = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    empty = ~mask.any(-1, keepdim=True)
    p = s.masked_fill(~(mask | empty), float("-inf")).softmax(-1).masked_fill(empty, 0.0)
    return p @ v


def test_tf32_matmuls_get_tf32_budgets_and_would_fail_float32_ones():
    mask = MaskSpec("key_padding", (SlicePattern("right_padding", 30), SlicePattern("all_true")))
    case = CaseSpec(
        batch_size=2,
        num_heads=2,
        q_len=5,
        kv_len=64,
        head_dim=64,
        value_dim=64,
        dtype=torch.float32,
        device="cuda",
        seed=3,
        logit_std=(1.0, 1.0),
        value_std=(1.0, 1.0),
        mask=mask,
    ).build()
    g = cotangent(case, (2, 2, 5, 64))
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")
        assert matmul_eps(torch.float32, "cuda")[0] == TF32_EPS
        in_tf32 = matmul_kernel(case.q, case.k, case.v, case.mask)
        c = kernel_budget(case, g, grads=False).compare("out", in_tf32)
        assert c.ok, c.explain()
        r = on_cuda("reference_agreement", sdpa("math"), torch.float32)
        assert r.status == "passed", r.message
        torch.set_float32_matmul_precision("highest")
        assert matmul_eps(torch.float32, "cuda")[0] == torch.finfo(torch.float32).eps
        # the float32 budget (its plain run in float32 too) does not admit the TF32 result
        assert not kernel_budget(case, g, grads=False).compare("out", in_tf32).ok
        c = kernel_budget(case, g, grads=False).compare(
            "out", matmul_kernel(case.q, case.k, case.v, case.mask)
        )
        assert c.ok, c.explain()
        r = on_cuda("reference_agreement", sdpa("math"), torch.float32)
        assert r.status == "passed", r.message
    finally:
        torch.set_float32_matmul_precision(before)


def mask_ignored_on_cuda(q, k, v, mask):
    """Right on the CPU; on CUDA it drops the mask (a fast path that forgets it)."""
    return sdpa("math")(q, k, v, mask if q.device.type == "cpu" else None)


def test_a_kernel_wrong_on_the_device_alone_fails_device_consistency_and_sdpa_passes():
    r = on_cuda("device_consistency", sdpa("math"), torch.float16)
    assert r.status == "passed", r.message
    r = on_cuda("device_consistency", mask_ignored_on_cuda, torch.float16)
    assert r.status == "failed" and r.property == "device_consistency"


def test_a_neg_inf_softmax_is_caught_on_cuda():
    r = on_cuda("finite_output", neg_inf_softmax, torch.bfloat16)
    assert r.status == "failed", r.message
