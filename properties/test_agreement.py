"""Agreement: with the guarded float64 reference, between the elements of a batch, and with the
inputs as they were passed.

``reference_agreement`` compares the output and the gradients with
:func:`xattn_ref.reference.reference_attention` within the tolerance model (docs/tolerance.md);
``batch_independence`` changes one batch element and compares the others.
"""

from __future__ import annotations

import torch

from xattn_ref._calls import Call, cotangent, index_str
from xattn_ref._compare import OutputBudget, expect, forward, judged_rows, only_judged
from xattn_ref._property import stated
from xattn_ref.cases import AttentionCase, Case
from xattn_ref.errors import Inexpressible, PropertyFailure
from xattn_ref.tolerance import format_pair


@stated()
def reference_agreement(call: Call, case: AttentionCase) -> bool:
    """Output and gradients agree with the float64 reference within the tolerance model (the
    output only, for forward-only targets; rows with no allowed key are left to
    ``empty_rows_zero`` under the empty-row policy ``finite``)."""
    judged = judged_rows(call, case)
    g = cotangent(case, (*case.q.shape[:3], case.v.shape[-1]), judged)
    out, grads = forward(call, case, g)
    budget = call.budget(case, g, grads=call.differentiable)
    out = only_judged(judged, out, budget.truth[case.output_name])
    results = {case.output_name: out, **grads}
    for name in budget.names:
        expect("reference_agreement", case, budget.compare(name, results[name]), "the float64 reference")
    return True


@stated()
def batch_independence(call: Call, case: Case) -> bool:
    """Changing one batch element (its values, or its context to all padding) leaves the others
    unchanged."""
    if case.batch_size < 2:
        return False
    b0 = case.batch_size - 1
    before = call(case)
    budget = OutputBudget(call, case, tuple(before.shape))
    judged = judged_rows(call, case)
    for other, words in (case.redrawn(b0), case.emptied(b0)):
        try:
            after = call(other)
        except Inexpressible:  # e.g. padding, for a kernel that takes no mask
            continue
        after = only_judged(None if judged is None else judged[:b0], after[:b0], before[:b0])
        c = budget.compare(case.output_name, after, before[:b0], batch=slice(0, b0), factor=2)
        expect("batch_independence", case, c, "the call before the change", f", after {words}")
    return True


def _changed(name: str, before: torch.Tensor, after: torch.Tensor) -> str | None:
    if before.shape != after.shape or before.dtype != after.dtype:
        was, now = (f"{tuple(t.shape)} {t.dtype}" for t in (before, after))
        return f"{name} changed shape or dtype in place: {was} -> {now}"
    diff = before != after
    if before.is_floating_point():
        diff &= ~(before.isnan() & after.isnan())
    if not bool(diff.any()):
        return None
    index = tuple(int(i) for i in diff.nonzero()[0])
    was, now = format_pair(float(before[index].item()), float(after[index].item()))
    return (
        f"{name} was modified in place by the call: {int(diff.sum())} elements changed, first at "
        f"{index_str(name, index)}: {was} -> {now}"
    )


@stated()
def no_input_mutation(call: Call, case: Case) -> bool:
    """Every input (the mask included) is unchanged after the call."""
    args, kwargs = call.arguments(case)
    originals = {n: t for n, t in (*args.items(), *kwargs.items()) if isinstance(t, torch.Tensor)}
    passed = {n: t.detach().clone() for n, t in originals.items()}
    call.run(
        case, {n: passed.get(n, t) for n, t in args.items()}, {n: passed.get(n, t) for n, t in kwargs.items()}
    )
    for name, original in originals.items():
        message = _changed(name, original, passed[name])
        if message is not None:
            raise PropertyFailure("no_input_mutation", case, message)
    return True


test_reference_agreement = reference_agreement.test
test_batch_independence = batch_independence.test
test_no_input_mutation = no_input_mutation.test
