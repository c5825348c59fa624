"""Consistency: low precision and accelerators agree with the same target in float64 on the CPU,
a model's attention implementations with each other, and its cached decoding with its full
forward, within the tolerance model (docs/tolerance.md).

The float64 side of a comparison is checked against the reference first: when it is broken, the
lower precision cannot be judged against it, and the float64 run reports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from xattn_ref._calls import Call, cotangent, first_nonfinite, index_str, model_call
from xattn_ref._compare import OutputBudget, expect, forward, judged_rows, only_judged
from xattn_ref._property import not_cpu, not_float64, stated
from xattn_ref.cases import Case
from xattn_ref.errors import NotTaken, TargetError

if TYPE_CHECKING:
    from xattn_ref.cases.model import ModelCase


def _consistency(prop: str, call: Call, case: Any, baseline: Any) -> None:
    differentiable = call.differentiable
    judged = judged_rows(call, case)
    out = call(case)
    g = cotangent(case, tuple(out.shape), judged)
    out, grads = forward(call, case, g)
    try:
        base_out, base_grads = forward(call, baseline, g.to(baseline.dtype).to(baseline.device))
    except TargetError as exc:  # e.g. a half-precision-only kernel: this run did not ask for float64
        raise NotTaken(f"it does not run in float64 on {baseline.device}: {exc}") from None
    budget = call.budget(case, g, grads=differentiable)
    out = only_judged(judged, out, budget.truth[case.output_name])
    base_out = only_judged(judged, base_out, budget.truth[case.output_name])
    results = {case.output_name: out, **grads}
    base = {case.output_name: base_out, **base_grads}
    names = [n for n in budget.names if n in results]
    against = f"the same target in {str(baseline.dtype).removeprefix('torch.')} on {baseline.device}"
    # The float64 side first: if it is further from the reference than the case's own budget
    # allows, the low-precision result cannot be judged against it.
    for name in names:
        c = budget.compare(name, base[name])
        index = first_nonfinite(base[name])
        if index is not None or not c.ok:
            why = (
                f"{base[name][index].item()} in {index_str(name, index)}"
                if index is not None
                else c.explain("the float64 reference")
            )
            # not a failure of this dtype: the float64 run of the properties reports that path
            raise NotTaken(
                f"its float64 path is broken, so the {str(case.dtype).removeprefix('torch.')} result "
                f"cannot be judged against it: in float64, {why} (--dtype float64 reports it)"
            )
    for name in names:
        expect(prop, case, budget.compare(name, results[name], base[name]), against)


@stated(not_applicable=not_float64)
def dtype_consistency(call: Call, case: Case) -> bool:
    """A low-precision result (output and gradients) agrees with the same target in float64 on
    the same device (the CPU for MPS), within the tolerance model."""
    if case.dtype == torch.float64:
        return False
    device = "cpu" if case.device.type == "mps" else str(case.device)
    _consistency("dtype_consistency", call, case, case.to(dtype=torch.float64, device=device))
    return True


@stated(not_applicable=not_cpu)
def device_consistency(call: Call, case: Case) -> bool:
    """A result on an accelerator (output and gradients) agrees with the same target in float64
    on the CPU, within the tolerance model."""
    if case.device.type == "cpu":
        return False
    _consistency("device_consistency", call, case, case.to(dtype=torch.float64, device="cpu"))
    return True


@stated()
def implementation_consistency(call: Call, case: ModelCase) -> bool:
    """Each attention implementation the model offers (eager, SDPA, ...) gives the logits of the
    model as given, at every real token (a fast path that forgets the mask, or a guard one path
    has and another lacks), within the sum of the two implementations' allowances (each one's
    own arithmetic: eager's float32 softmax in a float64 run is float32-accurate)."""
    model = model_call(call, "implementation_consistency")
    names = model.implementations(case)
    if not names:
        raise NotTaken("the model offers one attention implementation (no set_attn_implementation)")
    before = call(case)
    budget = OutputBudget(call, case, tuple(before.shape))
    judged = judged_rows(call, case)
    for name in names:
        with model.implementation(case, name):
            after = only_judged(judged, call(case), before)
            # both implementations' arithmetic: each one's allowance against the truth
            theirs = OutputBudget(call, case, tuple(before.shape))
            c = budget.compare(case.output_name, after, before, factor=1, also=theirs)
        how = f", with attn_implementation={name!r}"
        expect("implementation_consistency", case, c, "the model as given", how)
    return True


@stated()
def cached_decoding(call: Call, case: ModelCase) -> bool:
    """Decoding with the model's own cache, a prompt at once and then in chunks of one token or
    several (generation, chunked prefill, speculative verification), gives
    the logits of the full forward at every real token. The batch is left-padded, as generation
    pads it, unless the model takes right padding only (``--padding-side right``). A cache step
    that drops the mask, or counts positions from the cache's length, attends to the padding or
    shifts the positions."""
    model = model_call(call, "cached_decoding")
    if "left" in model.sides:
        case = case.with_side("left")
    if not bool(case.judged().any()):
        return False
    full = call(case)
    stepped = model.decode(case)
    budget = OutputBudget(call, case, tuple(full.shape))
    stepped = only_judged(case.judged(), stepped, full)
    c = budget.compare(case.output_name, stepped, full, factor=2)
    prompt = min(case.spec.prompt, full.shape[1])
    chunks = "one at a time" if case.spec.chunk == 1 else f"{case.spec.chunk} at a time"
    how = f", decoding left-padded with the cache ({prompt} positions at once, then {chunks})"
    expect("cached_decoding", case, c, "the full forward", how)
    return True


test_dtype_consistency = dtype_consistency.test
test_device_consistency = device_consistency.test
test_implementation_consistency = implementation_consistency.test
test_cached_decoding = cached_decoding.test
