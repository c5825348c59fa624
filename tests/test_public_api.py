"""The public API: ``import xattn_ref`` gives what a user needs, loads nothing heavy until a name
is used, and says what it expected when a name is wrong."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import xattn_ref as xr
from xattn_ref.cases import CaseSpec
from xattn_ref.errors import PropertyFailure, XattnArgumentError


def test_importing_the_package_imports_neither_torch_nor_hypothesis():
    code = "import sys, xattn_ref\nprint(sorted(m for m in ('torch', 'hypothesis') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


def test_every_public_name_resolves_and_the_surface_stays_small():
    assert len(xr.__all__) <= 25
    missing = [n for n in xr.__all__ if getattr(xr, n, None) is None]
    assert not missing
    with pytest.raises(AttributeError, match="no attribute 'attention_case'"):
        xr.attention_case  # noqa: B018


def test_check_runs_a_property_by_name_and_fails_a_kernel_that_breaks_it():
    case = CaseSpec(
        batch_size=2,
        num_heads=2,
        q_len=3,
        kv_len=5,
        head_dim=8,
        value_dim=8,
        dtype=torch.float32,
        device="cpu",
        seed=0,
        logit_std=(1.0, 1.0),
        value_std=(1.0, 1.0),
        mask=None,
    ).build()
    good = xr.kernel_call(lambda q, k, v, mask: xr.attention(q, k, v, mask).to(q.dtype))
    xr.check("reference_agreement", good, case)
    bad = xr.kernel_call(lambda q, k, v, mask: 2 * xr.attention(q, k, v, mask).to(q.dtype) + 1)
    with pytest.raises(PropertyFailure, match="allowed"):
        xr.check("reference_agreement", bad, case)
    with pytest.raises(XattnArgumentError, match="did you mean finite_output"):
        xr.check("finite_ouptut", good, case)
