"""The properties: reusable checks of a target on one case, the same for every kind of target.

A check takes a *call* (a target bound to its kind, :mod:`xattn_ref.kinds`) and a case
(:mod:`xattn_ref.cases`). It returns True when the case exercised the property, False when the
case did not apply (no empty row, one batch element, ...); it raises
:class:`~xattn_ref.errors.PropertyFailure` when the property does not hold, and
:class:`~xattn_ref.errors.TargetError` when the target misbehaved (raised, or returned the wrong
thing). Which properties a kind of target has is declared once, by its kind.

Root cause first: when the only evidence of a failure is a NaN or infinite value, the failure
names ``finite_output`` or ``finite_grad`` as its root (``PropertyFailure.root``), and reports
show it as following from that property instead of as an ``inf > allowed`` comparison.

On a kernel of your own tensors::

    from xattn_ref.cases import AttentionCase
    from xattn_ref.checks import finite_output
    from xattn_ref.kinds import kernel_call

    finite_output(kernel_call(my_kernel), AttentionCase.from_tensors(q, k, v, mask))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from xattn_ref import model_checks
from xattn_ref._calls import Call, cotangent, first_nonfinite, forward_backward, index_str
from xattn_ref._compare import OutputBudget, expect, forward, judged_rows, only_judged, root_of
from xattn_ref.errors import Inexpressible, NotTaken, PropertyFailure, TargetError
from xattn_ref.tolerance import format_pair

if TYPE_CHECKING:
    from xattn_ref.cases import AttentionCase, Case, ModelCase

__all__ = [
    "PROPERTIES",
    "Property",
    "batch_independence",
    "check",
    "compaction_equivalence",
    "device_consistency",
    "dtype_consistency",
    "empty_rows_zero",
    "finite_grad",
    "finite_output",
    "no_input_mutation",
    "nan_padding_invariance",
    "padding_invariance",
    "reference_agreement",
]


# --- the properties -------------------------------------------------------------------------


def _unexplained_nonfinite(
    call: Call, case: Any, name: str, t: torch.Tensor, g: torch.Tensor
) -> tuple[int, ...] | None:
    """The first non-finite element of ``t`` that is not an overflow of the truth itself (a true
    value beyond the dtype's range, whose correct rounding is an infinity)."""
    index = first_nonfinite(t)
    if index is None or case.dtype == torch.float64:
        return index
    try:
        budget = call.budget(case, g, grads=name != case.output_name)
    except NotTaken:  # no truth to explain it by
        return index
    if name not in budget.truth:
        return index
    return first_nonfinite(budget.settle(name, t))


def finite_output(call: Call, case: Case) -> bool:
    """Every element of the output is finite (no NaN, no inf), empty rows and fully padded
    contexts included (an infinity is correct only where the true value is beyond the dtype's
    range)."""
    out = call(case)
    index = _unexplained_nonfinite(call, case, case.output_name, out, cotangent(case, tuple(out.shape)))
    if index is not None:
        raise PropertyFailure(
            "finite_output",
            case,
            f"{out[index].item()} in {index_str(case.output_name, index)}; "
            f"{case.where(case.output_name, index)}",
        )
    return True


def finite_grad(call: Call, case: Case) -> bool:
    """Gradients with respect to every float input (and trainable parameter) are finite for a
    random cotangent (an infinity is correct only where the true value is beyond the dtype's
    range)."""
    out, grads = forward_backward(call, case)
    g = cotangent(case, tuple(out.shape))  # the one forward_backward used
    for name, grad in grads.items():
        index = _unexplained_nonfinite(call, case, name, grad, g)
        if index is not None:
            where = case.where(name, index) if name[1:] in case.inputs() else "a parameter"
            raise PropertyFailure(
                "finite_grad", case, f"{grad[index].item()} in {index_str(name, index)}; {where}"
            )
    return True


def empty_rows_zero(call: Call, case: AttentionCase) -> bool:
    """Rows with no allowed key output exactly zero and contribute exactly zero gradient (under
    the empty-row policy ``finite``: a finite output and finite gradients).

    The gradient part uses a cotangent that is non-zero on the empty rows only: then every
    gradient must be exactly zero. Forward-only targets: the output part.
    """
    rows = case.empty_rows
    if not bool(rows.any()):
        return False
    g = cotangent(case, (*rows.shape, case.v.shape[-1]), rows)
    out, grads = forward(call, case, g)
    if judged_rows(call, case) is not None:  # policy finite: any finite value will do
        # an infinity is finite enough where the exact gradient of the sentinel's meaning (every
        # key of an empty row allowed) is itself beyond the dtype's range
        opened = case.with_empty_rows_open()
        for name, t in ((case.output_name, out), *grads.items()):
            index = (
                first_nonfinite(t * rows.unsqueeze(-1))
                if name == case.output_name
                else _unexplained_nonfinite(call, opened, name, t, g)
            )
            if index is not None:
                source = "" if name == case.output_name else " from a cotangent non-zero only on empty rows"
                raise PropertyFailure(
                    "empty_rows_zero",
                    case,
                    f"{t[index].item()} in {index_str(name, index)}{source}; {case.where(name, index)} "
                    "(empty-row policy finite: any finite value, never NaN or inf)",
                    root=root_of(case, name),
                )
        return True
    bad = (out != 0) & rows.unsqueeze(-1)
    if bool(bad.any()):
        index = tuple(int(i) for i in bad.nonzero()[0])
        value = out[index].item()
        raise PropertyFailure(
            "empty_rows_zero",
            case,
            f"{index_str('out', index)} = {value:.17g}; {case.where('out', index)}, "
            "so the row must be exactly 0",
            root=None if torch.isfinite(out[index]) else "finite_output",
        )
    for name, grad in grads.items():
        nonzero = grad != 0
        if bool(nonzero.any()):
            index = tuple(int(i) for i in nonzero.nonzero()[0])
            raise PropertyFailure(
                "empty_rows_zero",
                case,
                f"{index_str(name, index)} = {grad[index].item():.17g} from a cotangent that is "
                f"non-zero only on rows that allow no key; such rows must contribute exactly 0 "
                f"gradient ({case.where(name, index)})",
                root=None if torch.isfinite(grad[index]) else "finite_grad",
            )
    return True


def padding_invariance(call: Call, case: Case) -> bool:
    """Any finite values at keys (context positions) that no query may attend to, huge ones
    included, leave the output unchanged."""
    changed = case.with_padding_replaced()
    if changed is None:
        return False
    other, words = changed
    before = call(case)
    budget = OutputBudget(call, case, tuple(before.shape))
    after = only_judged(judged_rows(call, case), call(other), before)
    c = budget.compare(case.output_name, after, before, factor=2)
    expect("padding_invariance", case, c, "the same call before the change", f", after {words}")
    return True


def nan_padding_invariance(call: Call, case: Case) -> bool:
    """NaN and inf stored at keys (context positions) that no query may attend to change nothing:
    the output stays finite and equal (tiled kernels that load padding and multiply it by a zero
    weight get NaN). Opt-in (``--strict``): torch's own math path fails it."""
    changed = case.with_padding_poisoned()
    if changed is None:
        return False
    other, words = changed
    before = call(case)
    after = only_judged(judged_rows(call, case), call(other), before)
    index = first_nonfinite(after)
    if index is not None and first_nonfinite(before) is None:
        raise PropertyFailure(
            "nan_padding_invariance",
            case,
            f"{after[index].item()} in {index_str(case.output_name, index)} after {words} "
            f"(finite before); {case.where(case.output_name, index)}",
        )
    budget = OutputBudget(call, case, tuple(before.shape))
    c = budget.compare(case.output_name, after, before, factor=2)
    expect("nan_padding_invariance", case, c, "the same call before the change", f", after {words}")
    return True


def compaction_equivalence(call: Call, case: Case) -> bool:
    """With a key-padding mask, each batch element's output equals the target on that element
    alone with its padding physically removed and no mask ("equivalence to the unmasked result").

    Batch elements whose whole context is padding have nothing to compare with and are left to
    ``empty_rows_zero`` and ``padding_invariance``.
    """
    if not case.compactable():
        return False
    out = call(case)
    budget = OutputBudget(call, case, tuple(out.shape))
    tested = False
    for b in range(case.batch_size):
        alone = case.alone(b)
        if alone is None:
            continue
        tested = True
        other, words = alone
        mine = case.pick(b, out) if hasattr(case, "pick") else out[b : b + 1]
        c = budget.compare(case.output_name, mine, call(other), batch=slice(b, b + 1), factor=2)
        expect("compaction_equivalence", case, c, words, offset=b)
    return tested


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


def dtype_consistency(call: Call, case: Case) -> bool:
    """A low-precision result (output and gradients) agrees with the same target in float64 on
    the same device (the CPU for MPS), within the tolerance model."""
    if case.dtype == torch.float64:
        return False
    device = "cpu" if case.device.type == "mps" else str(case.device)
    _consistency("dtype_consistency", call, case, case.to(dtype=torch.float64, device=device))
    return True


def device_consistency(call: Call, case: Case) -> bool:
    """A result on an accelerator (output and gradients) agrees with the same target in float64
    on the CPU, within the tolerance model."""
    if case.device.type == "cpu":
        return False
    _consistency("device_consistency", call, case, case.to(dtype=torch.float64, device="cpu"))
    return True


def _not_float64(dtype: torch.dtype, device: str) -> str | None:
    if dtype == torch.float64:
        return "compares a lower precision with float64; this run is float64"
    return None


def _not_cpu(dtype: torch.dtype, device: str) -> str | None:
    if torch.device(device).type == "cpu":
        return "compares an accelerator with the CPU; this run is on the CPU"
    return None


def _always(dtype: torch.dtype, device: str) -> str | None:
    return None


@dataclass(frozen=True)
class Property:
    """A named property and the check that tests it.

    - ``gradients``: the check is about gradients only (skipped for forward-only targets; the
      others run their forward half for them);
    - ``not_applicable``: why the property cannot apply to a dtype and device at all (then it
      is not run), or None;
    - ``opt_in``: run only when asked for (``--strict``, or by name).
    """

    name: str
    check: Callable[[Call, Any], bool]
    gradients: bool = False
    not_applicable: Callable[[torch.dtype, str], str | None] = _always
    opt_in: bool = False

    @property
    def summary(self) -> str:
        doc = self.check.__doc__ or ""
        return " ".join(doc.split("\n\n")[0].split())


#: Every property, by name. Each kind of target (:mod:`xattn_ref.kinds`) declares which apply.
PROPERTIES: dict[str, Property] = {
    p.name: p
    for p in (
        Property("finite_output", finite_output),
        Property("finite_grad", finite_grad, gradients=True),
        Property("empty_rows_zero", empty_rows_zero),
        Property("padding_invariance", padding_invariance),
        Property("nan_padding_invariance", nan_padding_invariance, opt_in=True),
        Property("compaction_equivalence", compaction_equivalence),
        Property("reference_agreement", reference_agreement),
        Property("batch_independence", batch_independence),
        Property("padding_side_invariance", model_checks.padding_side_invariance),
        Property("cached_decoding", model_checks.cached_decoding),
        Property("implementation_consistency", model_checks.implementation_consistency),
        Property("no_input_mutation", no_input_mutation),
        Property("dtype_consistency", dtype_consistency, not_applicable=_not_float64),
        Property("device_consistency", device_consistency, not_applicable=_not_cpu),
    )
}


def check(prop: str, call: Call, case: Case | ModelCase) -> bool:
    """Run property ``prop`` (a name from :data:`PROPERTIES`) on one case: ``call`` is your
    callable bound to its kind (:func:`xattn_ref.kinds.kernel_call`, ``layer_call``), ``case``
    one drawn by the strategies. Raises :class:`~xattn_ref.errors.PropertyFailure` (with the
    values, the root cause and a rebuild snippet) when the property does not hold; returns
    whether the case exercised the property at all (False: it says nothing either way)."""
    if prop not in PROPERTIES:
        from xattn_ref.errors import XattnArgumentError
        from xattn_ref.options import did_you_mean

        raise XattnArgumentError(
            f"prop must be one of {', '.join(PROPERTIES)}, got {prop!r}"
            + did_you_mean(prop, list(PROPERTIES))
        )
    return PROPERTIES[prop].check(call, case)
