"""Padding: rows with no allowed key, masked keys, padded sequences and the side a model's batch
is padded on change nothing they must not.

Each check changes what must not matter (the values at masked keys, NaN there, the padding
itself, the side of the padding) and compares the two results within twice the output's
allowance (docs/tolerance.md); ``empty_rows_zero`` asks for exact zeros.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from xattn_ref._calls import Call, cotangent, first_nonfinite, index_str, model_call
from xattn_ref._compare import (
    OutputBudget,
    expect,
    forward,
    judged_rows,
    only_judged,
    root_of,
    unexplained_nonfinite,
)
from xattn_ref._property import stated
from xattn_ref.cases import AttentionCase, Case
from xattn_ref.errors import NotTaken, PropertyFailure

if TYPE_CHECKING:
    from xattn_ref.cases.model import ModelCase


@stated()
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
                else unexplained_nonfinite(call, opened, name, t, g)
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


@stated()
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


@stated(opt_in=True)
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


@stated()
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
        mine = case.pick(b, out)
        c = budget.compare(case.output_name, mine, call(other), batch=slice(b, b + 1), factor=2)
        expect("compaction_equivalence", case, c, words, offset=b)
    return tested


@stated()
def padding_side_invariance(call: Call, case: ModelCase) -> bool:
    """The same sequences padded on the other side (left instead of right, or right instead of
    left) give the same logits at every real token (a model that derives positions from the
    index, not the mask, shifts left-padded tokens)."""
    if bool(case.judged().all()) and bool(case.attention_mask.all()):
        return False
    sides = model_call(call, "padding_side_invariance").sides
    if len(sides) < 2:
        raise NotTaken(f"the model is declared to take {sides[0]} padding only (--padding-side)")
    side = case.spec.tokens.side
    other = case.with_side("left" if side == "right" else "right")
    before, after = call(case), call(other)
    budget = OutputBudget(call, case, tuple(before.shape))
    tested = False
    for b in range(case.batch_size):
        if not bool(case.judged()[b].any()):
            continue
        tested = True
        mine, theirs = case.pick(b, before), other.pick(b, after)
        c = budget.compare(case.output_name, theirs, mine, batch=slice(b, b + 1), factor=2)
        words = f", with the same real tokens padded on the {'left' if side == 'right' else 'right'}"
        expect("padding_side_invariance", case, c, f"the {side}-padded batch", words, offset=b)
    return tested


test_empty_rows_zero = empty_rows_zero.test
test_padding_invariance = padding_invariance.test
test_nan_padding_invariance = nan_padding_invariance.test
test_compaction_equivalence = compaction_equivalence.test
test_padding_side_invariance = padding_side_invariance.test
