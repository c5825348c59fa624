"""Suite throughput: examples per second for each property (on SDPA), and for
each known-bad kernel the examples and seconds until its property catches it (ci profile)."""

from __future__ import annotations

import time

import pytest
import torch

from xattn_ref.kinds import KINDS
from xattn_ref.plan import select_properties
from xattn_ref.profiles import profile_settings
from xattn_ref.runner import run_property
from xattn_ref.targets import as_target
from xattn_ref.zoo.kernels import sdpa_kernel
from xattn_ref.zoo.known_bad import CAUGHT_BY, KNOWN_BAD


@pytest.mark.parametrize("prop", select_properties(KINDS["kernel"], None, None))
def test_examples_per_second(benchmark, figure, prop):
    benchmark.group = "examples per second (float32, 30 examples, sdpa)"
    settings = profile_settings("ci")
    results = []

    def run():
        results.append(
            run_property(as_target(sdpa_kernel), prop, dtype=torch.float32, device="cpu", settings=settings)
        )

    benchmark.pedantic(run, rounds=3, iterations=1)
    examples = results[-1].examples
    rate = examples / benchmark.stats.stats.mean
    benchmark.extra_info["examples_per_second"] = rate
    figure(f"{prop:24s} {rate:7.0f} examples/s  (sdpa, float32, {examples} examples per run)")


@pytest.mark.parametrize("name", list(KNOWN_BAD))
def test_time_to_catch(benchmark, figure, name):
    benchmark.group = "time to catch a known-bad kernel"
    prop = CAUGHT_BY[name]
    settings = profile_settings("ci", max_examples=100)
    dtypes = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
    found = {}

    def hunt():
        start = time.perf_counter()
        for dtype in dtypes:
            r = run_property(as_target(KNOWN_BAD[name]), prop, dtype=dtype, device="cpu", settings=settings)
            found.setdefault("examples", 0)
            found["examples"] += r.examples
            if r.status == "failed":
                found.update(dtype=r.dtype, seconds=time.perf_counter() - start)
                return
        found.update(dtype=None, seconds=time.perf_counter() - start)

    benchmark.pedantic(hunt, rounds=1, iterations=1)
    assert found["dtype"] is not None, f"{name} not caught in 100 examples per dtype"
    figure(
        f"{name:26s} caught by {prop:22s} in {found['examples']:3d} examples "
        f"(shrinking included), {found['seconds']:.2f} s, first in {found['dtype']}"
    )
