"""Finiteness: the output and the gradients are finite, rows with no allowed key included.

An infinity is correct only where the true value is beyond the dtype's range (its correct
rounding); the budget of the tolerance model (docs/tolerance.md) tells those apart. Failures
found only as NaN or inf in other properties name these two as their root cause.
"""

from __future__ import annotations

from xattn_ref._calls import Call, cotangent, forward_backward, index_str
from xattn_ref._compare import unexplained_nonfinite
from xattn_ref._property import stated
from xattn_ref.cases import Case
from xattn_ref.errors import PropertyFailure


@stated()
def finite_output(call: Call, case: Case) -> bool:
    """Every element of the output is finite (no NaN, no inf), empty rows and fully padded
    contexts included (an infinity is correct only where the true value is beyond the dtype's
    range)."""
    out = call(case)
    index = unexplained_nonfinite(call, case, case.output_name, out, cotangent(case, tuple(out.shape)))
    if index is not None:
        raise PropertyFailure(
            "finite_output",
            case,
            f"{out[index].item()} in {index_str(case.output_name, index)}; "
            f"{case.where(case.output_name, index)}",
        )
    return True


@stated(gradients=True)
def finite_grad(call: Call, case: Case) -> bool:
    """Gradients with respect to every float input (and trainable parameter) are finite for a
    random cotangent (an infinity is correct only where the true value is beyond the dtype's
    range)."""
    out, grads = forward_backward(call, case)
    g = cotangent(case, tuple(out.shape))  # the one forward_backward used
    for name, grad in grads.items():
        index = unexplained_nonfinite(call, case, name, grad, g)
        if index is not None:
            where = case.where(name, index) if name[1:] in case.inputs() else "a parameter"
            raise PropertyFailure(
                "finite_grad", case, f"{grad[index].item()} in {index_str(name, index)}; {where}"
            )
    return True


test_finite_output = finite_output.test
test_finite_grad = finite_grad.test
