"""The properties of whole models (the ``model`` kind, :mod:`xattn_ref.kinds.model`): padding on
either side, cached decoding, and the agreement of a model's attention implementations. Their
call is a :class:`~xattn_ref.kinds.model.ModelCall`; the rest is :mod:`xattn_ref.checks`'."""

from __future__ import annotations

from typing import TYPE_CHECKING

from xattn_ref._calls import Call
from xattn_ref._compare import OutputBudget, expect, judged_rows, only_judged
from xattn_ref.errors import NotTaken

if TYPE_CHECKING:
    from xattn_ref.cases.model import ModelCase

__all__ = ["cached_decoding", "implementation_consistency", "padding_side_invariance"]


def padding_side_invariance(call: Call, case: ModelCase) -> bool:
    """The same sequences padded on the other side (left instead of right, or right instead of
    left) give the same logits at every real token (a model that derives positions from the
    index, not the mask, shifts left-padded tokens)."""
    if bool(case.judged().all()) and bool(case.attention_mask.all()):
        return False
    sides = getattr(call, "sides", ("right", "left"))
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


def cached_decoding(call: Call, case: ModelCase) -> bool:
    """Decoding with the model's own cache, a prompt at once and then in chunks of one token or
    several (generation, chunked prefill, speculative verification), gives
    the logits of the full forward at every real token. The batch is left-padded, as generation
    pads it, unless the model takes right padding only (``--padding-side right``). A cache step
    that drops the mask, or counts positions from the cache's length, attends to the padding or
    shifts the positions."""
    if "left" in getattr(call, "sides", ("left",)):
        case = case.with_side("left")
    if not bool(case.judged().any()):
        return False
    full = call(case)
    stepped = call.decode(case)  # type: ignore[attr-defined]
    budget = OutputBudget(call, case, tuple(full.shape))
    stepped = only_judged(case.judged(), stepped, full)
    c = budget.compare(case.output_name, stepped, full, factor=2)
    prompt = min(case.spec.prompt, full.shape[1])
    chunks = "one at a time" if case.spec.chunk == 1 else f"{case.spec.chunk} at a time"
    how = f", decoding left-padded with the cache ({prompt} positions at once, then {chunks})"
    expect("cached_decoding", case, c, "the full forward", how)
    return True


def implementation_consistency(call: Call, case: ModelCase) -> bool:
    """Each attention implementation the model offers (eager, SDPA, ...) gives the logits of the
    model as given, at every real token (a fast path that forgets the mask, or a guard one path
    has and another lacks), within the sum of the two implementations' allowances (each one's
    own arithmetic: eager's float32 softmax in a float64 run is float32-accurate)."""
    names = call.implementations(case)  # type: ignore[attr-defined]
    if not names:
        raise NotTaken("the model offers one attention implementation (no set_attn_implementation)")
    before = call(case)
    budget = OutputBudget(call, case, tuple(before.shape))
    judged = judged_rows(call, case)
    for name in names:
        with call.implementation(case, name):  # type: ignore[attr-defined]
            after = only_judged(judged, call(case), before)
            # both implementations' arithmetic: each one's allowance against the truth
            theirs = OutputBudget(call, case, tuple(before.shape))
            c = budget.compare(case.output_name, after, before, factor=1, also=theirs)
        how = f", with attn_implementation={name!r}"
        expect("implementation_consistency", case, c, "the model as given", how)
    return True
