"""Meta-tests: the suite fails on every known-bad kernel, naming the property that caught it,
and passes the correct built-in kernels."""

from __future__ import annotations

import pytest
import torch

from xattn_ref._devices import ALL_DTYPES
from xattn_ref.checks import KERNEL_PROPERTIES
from xattn_ref.known_bad import CAUGHT_BY, KNOWN_BAD
from xattn_ref.profiles import profile_settings
from xattn_ref.runner import run_property
from xattn_ref.strategies import attention_cases
from xattn_ref.targets import BUILTIN_KERNELS

SETTINGS = profile_settings("ci")


def strategy(dtype, device):
    return attention_cases(dtypes=[dtype], devices=[device])


def run(prop, kernel, dtype, key):
    return run_property(
        KERNEL_PROPERTIES[prop],
        kernel,
        dtype=dtype,
        device="cpu",
        strategy=strategy,
        settings=SETTINGS,
        key=key,
    )


def test_every_property_has_a_known_bad_kernel_that_it_catches():
    uncovered = (
        set(KERNEL_PROPERTIES) - set(CAUGHT_BY.values()) - {"reference_agreement", "device_consistency"}
    )
    assert not uncovered, f"properties with no known-bad kernel: {sorted(uncovered)}"
    assert len(set(KNOWN_BAD)) >= 6


@pytest.mark.parametrize("name", list(KNOWN_BAD))
def test_the_suite_catches_each_known_bad_kernel(name):
    prop = CAUGHT_BY[name]
    results = [run(prop, KNOWN_BAD[name], dtype, name) for dtype in ALL_DTYPES]
    failed = [r for r in results if r.status == "failed"]
    assert failed, f"{prop} did not catch {name}: {[(r.dtype, r.status, r.message) for r in results]}"
    for r in failed:
        assert r.property == prop and r.case is not None and r.message


@pytest.mark.parametrize(
    "name", ["finfo_min_fill", "single_key_fast_path", "batch_global_max", "wrong_scale_without_mask"]
)
def test_reference_agreement_catches_wrong_values(name):
    results = [run("reference_agreement", KNOWN_BAD[name], dtype, name) for dtype in ALL_DTYPES]
    assert any(r.status == "failed" for r in results), name


def test_minus_1e9_fill_fails_in_float16_only():
    verdicts = {
        r.dtype: r.status
        for r in (run("finite_grad", KNOWN_BAD["minus_1e9_fill"], d, "1e9") for d in ALL_DTYPES)
    }
    assert verdicts == {"float64": "passed", "float32": "passed", "float16": "failed", "bfloat16": "passed"}


def test_failures_name_the_row_that_allows_no_key():
    r = run("finite_output", KNOWN_BAD["neg_inf_softmax"], torch.float32, "neg_inf")
    assert r.status == "failed"
    assert "nan in out[0, 0, 0, 0]; mask row [0, 0, 0] allows no key" in r.message
    assert r.case is not None and "all_false" in r.case.describe()


@pytest.mark.parametrize("prop", list(KERNEL_PROPERTIES))
@pytest.mark.parametrize("name", list(BUILTIN_KERNELS))
def test_correct_kernels_pass_every_property(name, prop):
    for dtype in ALL_DTYPES:
        r = run(prop, BUILTIN_KERNELS[name], dtype, name)
        assert r.status == "passed", r.message


def test_a_kernel_that_raises_is_an_error_not_a_failure():
    def broken(q, k, v, mask):
        raise RuntimeError("boom")

    r = run("finite_output", broken, torch.float32, "broken")
    assert r.status == "error" and "the target raised RuntimeError: boom" in r.message


def test_a_kernel_with_the_wrong_shape_is_an_error():
    r = run("finite_output", lambda q, k, v, mask: q[..., :1], torch.float32, "shape")
    assert r.status == "error" and "expected (B, H, Lq, Dv)" in r.message
