"""The precision a float64 run actually has: a run that computes in float32 (Hugging Face's
eager softmax, rotary tables, RMSNorm) is judged at float32's rounding unit and says so once, as
information; half precision inside a float64 run is not admitted; and a float32 computation off
by more than float32's own error is still caught in float64."""

from __future__ import annotations

import sys

import pytest
import torch

from tests._support import run
from xattn_ref._perturbed import Perturbation
from xattn_ref.precision import FLOAT32, LowerPrecision, summarize
from xattn_ref.profiles import profile_settings


def _softmax_in(dtype: torch.dtype, off: float = 0.0):
    def kernel(q, k, v, mask):
        s = torch.einsum("bhid,bhjd->bhij", q, k) * q.shape[-1] ** -0.5
        allowed = torch.ones_like(s, dtype=torch.bool) if mask is None else mask.expand(s.shape)
        some = allowed.any(-1, keepdim=True)
        s = torch.where(allowed, s, -torch.inf).where(some, 0.0)
        p = (torch.softmax(s.to(dtype), -1) * (1 + off)).to(q.dtype) * some
        return p @ v

    kernel.__name__ = f"softmax_in_{str(dtype)[6:]}" + ("_off" if off else "")
    return kernel


float32_softmax = _softmax_in(torch.float32)  # correct: as Hugging Face's eager attention
bfloat16_softmax = _softmax_in(torch.bfloat16)  # known-bad: half precision in a float64 run
float32_softmax_off = _softmax_in(torch.float32, 1e-5)  # known-bad: 80 float32 roundings off


def test_an_observing_mode_imports_no_compiler_and_steps_aside_from_one_that_is_loaded():
    """torch's wrapper for a mode imports torch._dynamo on its first call (about 1.2 s in every
    worker); a watching mode skips the compiler itself once it is loaded, as a compiled region
    needs it to be."""
    import torch._dynamo

    from xattn_ref._perturbed import ObservingMode

    class Watching(ObservingMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    assert not hasattr(Watching.__dict__["__torch_dispatch__"], "__wrapped__")  # no wrapper made
    for mode in (LowerPrecision, Perturbation):
        assert mode._should_skip_dynamo() is False, mode
    assert "torch._dynamo" in sys.modules  # loaded, as by a target that compiles
    with Watching():
        torch.ones(2) + 1
    assert hasattr(Watching.__dict__["__torch_dispatch__"], "__wrapped__")  # torch._dynamo.disable's


def test_the_recorder_names_the_arithmetic_in_float32_and_nothing_in_plain_float64():
    q = torch.randn(1, 1, 3, 8, dtype=torch.float64)
    with LowerPrecision() as mode:
        float32_softmax(q, q, q, None)
    assert "_softmax" in mode.ops and "bmm" not in mode.ops
    with LowerPrecision() as plain:
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
    assert not plain.ops


def test_a_float64_run_with_a_float32_softmax_is_judged_at_float32_and_says_so():
    for prop in ("reference_agreement", "compaction_equivalence", "batch_independence"):
        r = run(prop, float32_softmax, torch.float64)
        assert r.status == "passed", (prop, r.message)
    r = run("reference_agreement", float32_softmax, torch.float64)
    assert (FLOAT32, "_softmax") in r.notes
    assert "float32-accurate" in summarize(r.notes)[0] and "not a failure" in summarize(r.notes)[0]


def test_half_precision_in_a_float64_run_and_float32_beyond_its_error_are_caught():
    assert run("reference_agreement", bfloat16_softmax, torch.float64).status == "failed"
    r = run("reference_agreement", float32_softmax_off, torch.float64)
    assert r.status == "failed" and "> allowed" in r.message


def test_a_hugging_face_llama_holds_in_float64_and_its_known_bad_twins_are_still_caught():
    """The README's own model: eager attention and rotary tables in float32 inside float64."""
    from xattn_ref.zoo.hf_models import causal_lm
    from xattn_ref.zoo.known_bad import KNOWN_BAD_MODELS

    model = causal_lm("llama")
    for prop in ("implementation_consistency", "padding_side_invariance", "compaction_equivalence"):
        r = run(prop, model, torch.float64, kind="model", max_examples=15)
        assert r.status == "passed", (prop, r.message)
    for name in ("sdpa_forgets_padding", "cache_drops_mask"):
        factory, options, prop = KNOWN_BAD_MODELS[name]
        r = run(prop, factory(), torch.float64, kind="model", name=name, **options)
        assert r.status == "failed", (name, r.status, r.message)


class NoFloat64(torch.nn.Module):
    """A model that takes no float64 (as gpt-oss's grouped matmul)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask):
        if next(self.parameters()).dtype == torch.float64:
            raise RuntimeError("expected a Float32, BFloat16 or Float16 matrix, got Double")
        return self.inner(input_ids, attention_mask)


def test_a_model_with_no_float64_is_judged_on_its_float32_run_and_its_defects_still_show():
    from xattn_ref.kinds import KINDS
    from xattn_ref.plan import probe
    from xattn_ref.precision import NO_FLOAT64, collected
    from xattn_ref.runner import run_property
    from xattn_ref.targets import as_target
    from xattn_ref.zoo.known_bad import attends_to_padding
    from xattn_ref.zoo.tiny_models import TinyLM

    target = as_target(NoFloat64(TinyLM()), kind="model", vocab=32)
    probe(target, [torch.float64, torch.float32], ["cpu"])  # float64 raises, float32 runs
    assert "does not run in float64" in target.unusable["float64"]
    settings = profile_settings("ci", max_examples=10)
    skipped = run_property(target, "finite_output", dtype=torch.float64, device="cpu", settings=settings)
    assert skipped.status == "skipped" and "does not run in float64" in skipped.message
    case = KINDS["model"].probe(target.options, torch.float16, "cpu")
    with collected() as notes:  # the allowance stands on the float32 run, and says so
        budget = target.call.budget(case, None, grads=False)
    assert any(topic == NO_FLOAT64 for topic, _ in notes)
    assert budget.truth[case.output_name].dtype == torch.float64 and bool(
        budget.allowed("logits").gt(0).all()
    )
    bad = run("padding_invariance", NoFloat64(attends_to_padding()), torch.float32, kind="model", vocab=32)
    assert bad.status == "failed", bad.message


def test_a_float64_run_that_cannot_be_watched_is_judged_unwatched_and_its_own_errors_still_raise():
    """A dispatch mode some targets refuse (FlexAttention's compiled higher-order operator): the
    run goes again unwatched, judged at float64's unit, with a notice; an error of the target's
    own still raises."""
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    from xattn_ref.precision import UNWATCHED, collected, float64_precision

    def refuses_modes():
        if _get_current_dispatch_mode() is not None:
            raise NotImplementedError("no rule registered for this mode")
        return torch.ones(2, dtype=torch.float64)

    with collected() as notes:
        result, unit = float64_precision(refuses_modes)
    assert torch.equal(result, torch.ones(2, dtype=torch.float64)) and unit == torch.finfo(torch.float64).eps
    assert (UNWATCHED, "NotImplementedError: no rule registered for this mode") in notes
    assert any("could not be watched" in line for line in summarize(notes))

    def broken():
        raise ValueError("its own")

    with pytest.raises(ValueError, match="its own"):
        float64_precision(broken)
