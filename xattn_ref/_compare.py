"""What the properties share: comparing a result with its budget and reporting the first
failure root cause first, the rows a comparison judges, and the output budget made only when
two results differ."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from xattn_ref._calls import Call, cotangent, first_nonfinite, forward_backward, index_str
from xattn_ref.errors import NotTaken, PropertyFailure
from xattn_ref.tolerance import Budget, Comparison

__all__ = [
    "OutputBudget",
    "expect",
    "forward",
    "judged_rows",
    "only_judged",
    "root_of",
    "unexplained_nonfinite",
]


def root_of(case: Any, what: str) -> str:
    return "finite_output" if what == case.output_name else "finite_grad"


def expect(prop: str, case: Any, c: Comparison, against: str, after: str = "", *, offset: int = 0) -> None:
    """Raise the failure for comparison ``c`` if it fails: root cause first. ``offset``: the
    batch index of the first element compared."""
    __tracebackhide__ = True
    if c.ok:
        return
    for side, tensor in (("", c.actual), (f" ({against})", c.expected)):
        index = first_nonfinite(tensor)
        if index is not None:
            where = index_str(c.what, (index[0] + offset, *index[1:]))
            raise PropertyFailure(
                prop,
                case,
                f"{tensor[index].item()} in {where}{side}{after}: a non-finite value (what "
                f"{root_of(case, c.what)} checks)",
                root=root_of(case, c.what),
            )
    raise PropertyFailure(prop, case, c.explain(against, offset=offset) + after)


def unexplained_nonfinite(
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


def judged_rows(call: Call, case: Any) -> torch.Tensor | None:
    """The output rows the checks judge (None: all). A self-attention layer's padded positions
    are not judged (``case.judged()``); under the empty-row policy ``finite`` only the rows that
    allow some key are (bool ``(B, H, Lq)`` for a kernel, ``(B, Lq)`` for a layer): an empty
    row's value is the policy's business, checked for finiteness only."""
    judged: torch.Tensor | None = case.judged()
    if judged is not None:
        return judged
    if call.empty_rows != "finite":
        return None
    rows: torch.Tensor = ~case.empty_rows
    return rows


def only_judged(judged: torch.Tensor | None, actual: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """``actual`` on the judged rows, ``expected`` elsewhere (so only judged rows can differ)."""
    if judged is None:
        return actual
    if expected.dtype == torch.float64:  # the truth: kept exact where it stands in
        actual = actual.to(torch.float64)
    keep = judged.to(actual.device).unsqueeze(-1)
    return torch.where(keep, actual, expected.to(actual))


def forward(call: Call, case: Any, g: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The output, and the gradients for ``g`` when the target is differentiable (none when it is
    declared forward-only)."""
    if call.differentiable:
        return forward_backward(call, case, g)
    return call(case).detach(), {}


class OutputBudget:
    """The budget of the output alone (the cotangent only sets the gradients' magnitudes), for
    comparing two results of the target: made only when they differ (finite results that are
    equal element by element hold under any budget, and a model's budget costs several runs of
    it in float64)."""

    def __init__(self, call: Call, case: Any, out_shape: tuple[int, ...]) -> None:
        self._call, self._case, self._shape = call, case, out_shape
        self._budget: Budget | None = None

    def compare(
        self, name: str, actual: torch.Tensor, expected: torch.Tensor, *, batch: slice = slice(None),
        factor: float, also: OutputBudget | None = None,
    ) -> Comparison:  # fmt: skip
        """``actual`` against ``expected`` within ``factor`` times the allowance; with ``also``,
        within the sum of this allowance and that one's (two computations, each judged by its
        own arithmetic: ``|a - b| <= |a - truth| + |b - truth|``)."""
        same = actual.shape == expected.shape and actual.dtype == expected.dtype
        if same and bool(torch.equal(actual, expected)) and bool(actual.isfinite().all()):
            return Comparison(name, actual, expected, torch.zeros((), dtype=torch.float64))
        c = self.budget.compare(name, actual, expected, batch=batch, factor=factor)
        if also is None:
            return c
        extra = also.budget.allowed(name, batch=batch, factor=factor)
        return dataclasses.replace(c, allowed=c.allowed + extra)

    @property
    def budget(self) -> Budget:
        """The budget, made at the first use (in the call's state then: an implementation)."""
        if self._budget is None:
            self._budget = self._call.budget(self._case, cotangent(self._case, self._shape), grads=False)
        return self._budget
