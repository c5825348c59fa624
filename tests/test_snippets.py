"""Every rebuild snippet reproduces: for each known-bad implementation (every kind), the Python a
failure report prints, run as printed, raises the failure again; so does a real target's under
``--call`` (a factory, an inverted mask) and ``--select``."""

from __future__ import annotations

import pytest
import torch

from tests._support import NO_SHRINK
from xattn_ref.errors import PropertyFailure, TargetError
from xattn_ref.plan import load
from xattn_ref.profiles import profile_settings
from xattn_ref.report import rebuild_snippet
from xattn_ref.runner import run_property
from xattn_ref.zoo.known_bad import REGISTRY

FACTORIES = ("layer", "encoder", "model")
# finite defects that show in a share of the drawn cases (tests/test_meta.py)
EXAMPLES = {"half_accumulator": 500, "half_softmax": 500, "sentinel_empty_rows": 500}


def first_failure(spec, kind, options, prop, dtypes, examples=100):
    target = load(spec, kind, dict(options))
    settings = profile_settings("ci", phases=NO_SHRINK, max_examples=examples)
    for dtype in dtypes:
        result = run_property(target, prop, dtype=dtype, device="cpu", settings=settings)
        if result.status in ("failed", "error"):
            return target, result
    raise AssertionError(f"{prop} did not catch {spec}")


def assert_reproduces(target, result):
    snippet = rebuild_snippet(target, result)
    assert snippet and f"check({result.property!r}, call, case)" in snippet
    with pytest.raises((PropertyFailure, TargetError)) as raised:
        exec(compile(snippet, "<rebuild snippet>", "exec"), {})
    if isinstance(raised.value, PropertyFailure):
        assert raised.value.prop == result.property


@pytest.mark.parametrize("name", list(REGISTRY))
def test_the_snippet_of_each_known_bad_reproduces_its_failure(name):
    bad = REGISTRY[name]
    spec = f"xattn_ref.zoo.known_bad:{name}" + ("()" if bad.kind in FACTORIES else "")
    dtypes = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
    if bad.finite is not None:
        dtypes = [getattr(torch, d) for d in bad.finite.dtypes]
    options = {"dim": 16, **bad.options} if bad.kind in ("layer", "encoder") else bad.options
    target, result = first_failure(spec, bad.kind, options, bad.caught_by, dtypes, EXAMPLES.get(name, 100))
    assert_reproduces(target, result)


def test_snippets_reproduce_under_call_select_and_factories():
    spec = "torch.nn:MultiheadAttention(16, 2, batch_first=True)"
    call = "x, context, context, key_padding_mask=~context_mask"  # need_weights: finding 5
    target, result = first_failure(
        spec, "layer", {"dim": 16, "call": call, "select": "0"}, "finite_output", [torch.float32]
    )
    assert_reproduces(target, result)
