"""The properties: reusable checks of a target on one case, the same for every kind of target,
each stated once in the property suite (``properties/``, shipped as :mod:`xattn_ref.suite`: one
file per family, the check, its statement and its test) and gathered here.

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

from typing import TYPE_CHECKING

from xattn_ref._property import Property
from xattn_ref.errors import XattnArgumentError
from xattn_ref.options import did_you_mean
from xattn_ref.suite.test_agreement import batch_independence, no_input_mutation, reference_agreement
from xattn_ref.suite.test_consistency import (
    cached_decoding,
    device_consistency,
    dtype_consistency,
    implementation_consistency,
)
from xattn_ref.suite.test_finiteness import finite_grad, finite_output
from xattn_ref.suite.test_padding import (
    compaction_equivalence,
    empty_rows_zero,
    nan_padding_invariance,
    padding_invariance,
    padding_side_invariance,
)

if TYPE_CHECKING:
    from xattn_ref._calls import Call
    from xattn_ref.cases import Case, ModelCase

__all__ = [
    "PROPERTIES",
    "Property",
    "batch_independence",
    "cached_decoding",
    "check",
    "compaction_equivalence",
    "device_consistency",
    "dtype_consistency",
    "empty_rows_zero",
    "finite_grad",
    "finite_output",
    "implementation_consistency",
    "nan_padding_invariance",
    "no_input_mutation",
    "padding_invariance",
    "padding_side_invariance",
    "reference_agreement",
]

#: Every property, by name, in report order. Each kind of target (:mod:`xattn_ref.kinds`)
#: declares which apply to it.
PROPERTIES: dict[str, Property] = {
    p.name: p
    for p in (
        finite_output,
        finite_grad,
        empty_rows_zero,
        padding_invariance,
        nan_padding_invariance,
        compaction_equivalence,
        reference_agreement,
        batch_independence,
        padding_side_invariance,
        cached_decoding,
        implementation_consistency,
        no_input_mutation,
        dtype_consistency,
        device_consistency,
    )
}


def check(prop: str | Property, call: Call, case: Case | ModelCase) -> bool:
    """Run property ``prop`` (one of :data:`PROPERTIES`, or its name) on one case: ``call`` is
    your callable bound to its kind (:func:`xattn_ref.kinds.kernel_call`, ``layer_call``),
    ``case`` one drawn by the strategies. Raises :class:`~xattn_ref.errors.PropertyFailure`
    (with the values, the root cause and a rebuild snippet) when the property does not hold;
    returns whether the case exercised the property at all (False: it says nothing either way)."""
    if isinstance(prop, Property):
        return prop.check(call, case)
    if prop not in PROPERTIES:
        raise XattnArgumentError(
            f"prop must be one of {', '.join(PROPERTIES)}, got {prop!r}"
            + did_you_mean(prop, list(PROPERTIES))
        )
    return PROPERTIES[prop].check(call, case)
