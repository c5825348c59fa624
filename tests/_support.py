"""Helpers shared by the tests: run one property on a callable, in-process."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import pytest
import torch
from hypothesis import Phase

from xattn_ref._devices import ALL_DTYPES
from xattn_ref.profiles import profile_settings
from xattn_ref.runner import Result, run_property
from xattn_ref.targets import as_target

# A failure is not shrunk unless asked: these tests assert that a property fails (or holds), and
# shrinking was most of a failing run's time (the 23 known-bad kernels of test_meta: 19.6 s -> 5.5 s).
NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)
SETTINGS = profile_settings("ci")  # as the gate runs: failures shrunk


def run(
    prop: str,
    fn: Any,
    dtype: torch.dtype = torch.float32,
    *,
    kind: str = "kernel",
    name: str | None = None,
    max_examples: int | None = None,
    seed: int = 0,
    shrink: bool = False,
    **options: Any,
) -> Result:
    overrides: dict[str, Any] = {} if shrink else {"phases": NO_SHRINK}
    if max_examples is not None:
        overrides["max_examples"] = max_examples
    settings = profile_settings("ci", **overrides)
    target = as_target(fn, kind=kind, name=name, **options)
    return run_property(target, prop, dtype=dtype, device="cpu", settings=settings, seed=seed)


def run_all_dtypes(prop: str, fn: Any, **kwargs: Any) -> dict[str, Result]:
    return {r.dtype: r for r in (run(prop, fn, dtype, **kwargs) for dtype in ALL_DTYPES)}


def tf32_rounded(t: torch.Tensor) -> torch.Tensor:
    """float32 rounded to TF32's 10 mantissa bits (to nearest), as TF32 matmuls read their inputs."""
    bits = t.contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


def without_xattn_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset every ``XATTN_*`` variable of the caller's environment (a test sets its own after)."""
    for var in [v for v in os.environ if v.startswith("XATTN_")]:
        monkeypatch.delenv(var)



def not_holding(results: Iterable[Result], cannot_apply: Iterable[str] = ()) -> dict[str, str]:
    """Why "every property holds" is not shown by ``results`` (empty when it is): each run that
    failed or errored, and each property that no run exercised (n/a or skipped in every dtype:
    a green that tested nothing), except ``device_consistency``, which the CPU cannot exercise,
    and the properties ``cannot_apply`` names (the caller says why)."""
    problems: dict[str, str] = {}
    by_property: dict[str, list[Result]] = {}
    for r in results:
        by_property.setdefault(r.property, []).append(r)
        if r.status in ("failed", "error"):
            problems[r.id] = r.message
    for prop, runs in by_property.items():
        exempt = prop == "device_consistency" or prop in cannot_apply
        if not exempt and not any(r.status == "passed" for r in runs):
            problems[prop] = "no run exercised it: " + "; ".join(sorted({r.message for r in runs}))
    return problems
