"""The properties, as reusable checks of a kernel on one :class:`AttentionCase`.

A kernel is ``fn(q, k, v, mask) -> out`` in the layout of ``scaled_dot_product_attention``:
q ``(B, H, Lq, D)``, k ``(B, H, Lk, D)``, v ``(B, H, Lk, Dv)``, out ``(B, H, Lq, Dv)``, and
``mask`` None or bool broadcastable to ``(B, H, Lq, Lk)`` with **True = may attend**.

Each check returns True when the case exercised it (False when it did not apply: no empty
row, one batch element, ...), raises :class:`PropertyFailure` when the property does not
hold, and :class:`TargetError` when the kernel cannot be tested (it raised, or returned the
wrong shape, dtype or device). The property suite, the CLI and the pytest plugin all run
these same functions; ``KERNEL_PROPERTIES`` lists them by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from xattn_ref._calls import (
    Kernel,
    TargetError,
    call_kernel,
    cotangent,
    describe_key,
    describe_row,
    forward_backward,
    index_str,
    plain_forward_backward,
)
from xattn_ref._devices import dtype_name
from xattn_ref._spec import AttentionCase
from xattn_ref.tolerance import Comparison, compare, magnitudes

__all__ = [
    "KERNEL_PROPERTIES",
    "Property",
    "PropertyFailure",
    "TargetError",
    "batch_independence",
    "compaction_equivalence",
    "device_consistency",
    "dtype_consistency",
    "empty_rows_zero",
    "finite_grad",
    "finite_output",
    "no_input_mutation",
    "padding_invariance",
    "reference_agreement",
]

GRAD_NAMES = ("dq", "dk", "dv")


class _Case(Protocol):
    def describe(self) -> str: ...
    def snippet(self) -> str: ...


class PropertyFailure(AssertionError):
    """A property does not hold on a case. ``str()`` has the values and a reproduction."""

    def __init__(self, prop: str, case: _Case, message: str) -> None:
        self.prop = prop
        self.case = case
        self.detail = message
        super().__init__(
            f"[{prop}] {message}\n  case: {case.describe()}\n  reproduce:\n    "
            + case.snippet().replace("\n", "\n    ")
        )


def _fail(prop: str, case: AttentionCase, message: str) -> PropertyFailure:
    __tracebackhide__ = True
    return PropertyFailure(prop, case, message)


def _first_nonfinite(t: torch.Tensor) -> tuple[int, ...] | None:
    bad = ~t.detach().isfinite()
    if not bool(bad.any()):
        return None
    return tuple(int(i) for i in bad.nonzero()[0])


def _where(case: AttentionCase, name: str, index: tuple[int, ...]) -> str:
    b, h, pos = index[0], index[1], index[2]
    if name in ("out", "dq"):
        return describe_row(case, b, h, pos)
    return describe_key(case, b, h, pos)


def _check_comparisons(prop: str, case: AttentionCase, comparisons: list[Comparison], against: str) -> None:
    for c in comparisons:
        if not c.ok:
            raise _fail(prop, case, c.explain(against))


@dataclass(frozen=True)
class _Budget:
    """What the tolerance model needs for one case: the float64 truth (the reference on the
    exactly upcast inputs), the plain same-dtype result, and the magnitudes, for ``out`` and,
    when asked for, ``dq``, ``dk``, ``dv``."""

    truth: dict[str, torch.Tensor]
    plain: dict[str, torch.Tensor]
    magnitude: dict[str, torch.Tensor]
    dtype: torch.dtype

    def compare(
        self,
        what: str,
        actual: torch.Tensor,
        expected: torch.Tensor | None = None,
        batch: slice = slice(None),
        factor: float = 1.0,
    ) -> Comparison:
        exp = self.truth[what][batch] if expected is None else expected
        return compare(
            what,
            actual,
            exp,
            self.truth[what][batch],
            self.plain[what][batch],
            self.magnitude[what][batch],
            self.dtype,
            factor=factor,
        )


def _budget(case: AttentionCase, g: torch.Tensor, *, grads: bool) -> _Budget:
    from xattn_ref.reference import attention, default_scale

    device = "cpu" if case.device.type == "mps" else str(case.device)
    exact = case.to(dtype=torch.float64, device=device)
    t_grads: tuple[torch.Tensor, ...] = ()
    if grads:
        t_out, t_grads = forward_backward(attention, exact, g.to(dtype=torch.float64, device=device))
    else:
        t_out = call_kernel(attention, exact)
    p_out, p_grads = plain_forward_backward(case, g if grads else None)
    scale = default_scale(case.q.shape[-1])
    return _Budget(
        truth=dict(zip(("out", *GRAD_NAMES), (t_out, *t_grads))),
        plain=dict(zip(("out", *GRAD_NAMES), (p_out, *p_grads))),
        magnitude=magnitudes(case.q, case.k, case.v, g, scale),
        dtype=case.dtype,
    )


def _compare_all(
    budget: _Budget,
    out: torch.Tensor,
    grads: tuple[torch.Tensor, ...],
    expected: tuple[torch.Tensor, ...] | None = None,
) -> list[Comparison]:
    actual = (out, *grads)
    names = ("out", *GRAD_NAMES)
    exp: tuple[torch.Tensor | None, ...] = expected if expected is not None else (None,) * 4
    return [budget.compare(n, a, e) for n, a, e in zip(names, actual, exp)]


# --- the properties -------------------------------------------------------------------------


def finite_output(kernel: Kernel, case: AttentionCase) -> bool:
    """Every element of the output is finite (no NaN, no inf), empty rows included."""
    out = call_kernel(kernel, case)
    index = _first_nonfinite(out)
    if index is not None:
        value = out[index].item()
        raise _fail(
            "finite_output",
            case,
            f"{value} in {index_str('out', index)}; {describe_row(case, *index[:3])}",
        )
    return True


def finite_grad(kernel: Kernel, case: AttentionCase) -> bool:
    """Gradients with respect to q, k and v are finite for a random cotangent."""
    _, grads = forward_backward(kernel, case)
    for name, grad in zip(GRAD_NAMES, grads):
        index = _first_nonfinite(grad)
        if index is not None:
            raise _fail(
                "finite_grad",
                case,
                f"{grad[index].item()} in {index_str(name, index)}; {_where(case, name, index)}",
            )
    return True


def empty_rows_zero(kernel: Kernel, case: AttentionCase) -> bool:
    """Rows with no allowed key output exactly zero and contribute exactly zero gradient.

    The gradient part uses a cotangent that is non-zero on the empty rows only: then dq, dk
    and dv must all be exactly zero.
    """
    rows = case.empty_rows
    if not bool(rows.any()):
        return False
    out, grads = forward_backward(kernel, case, cotangent(case, rows))
    bad = (out != 0) & rows.unsqueeze(-1)
    if bool(bad.any()):
        index = tuple(int(i) for i in bad.nonzero()[0])
        raise _fail(
            "empty_rows_zero",
            case,
            f"{index_str('out', index)} = {out[index].item():.6g}; "
            f"{describe_row(case, *index[:3])}, so the row must be exactly 0",
        )
    for name, grad in zip(GRAD_NAMES, grads):
        bad_grad = grad != 0
        if bool(bad_grad.any()):
            index = tuple(int(i) for i in bad_grad.nonzero()[0])
            raise _fail(
                "empty_rows_zero",
                case,
                f"{index_str(name, index)} = {grad[index].item():.6g} from a cotangent that is "
                f"non-zero only on rows that allow no key; such rows must contribute exactly 0 "
                f"gradient ({_where(case, name, index)})",
            )
    return True


def _huge_padding(case: AttentionCase, dead: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """k and v with the keys no query may attend to replaced by huge values of random sign.

    Huge, but finite in the dtype once multiplied: ``|k| = min(1e6, max / (8 * max_i ||q_i||_1))``
    keeps every score finite, ``|v| = min(1e6, max / (8 * Lk))`` keeps every weighted sum finite.
    """
    top = torch.finfo(case.dtype).max
    q_l1 = float(case.q.detach().abs().double().sum(-1).max().clamp_min(1.0))
    k_mag = min(1e6, top / (8 * q_l1))
    v_mag = min(1e6, top / (8 * case.k.shape[2]))
    gen = torch.Generator().manual_seed(case.spec.seed + 2)
    sign_k = torch.randint(0, 2, case.k.shape, generator=gen).mul(2).sub(1)
    sign_v = torch.randint(0, 2, case.v.shape, generator=gen).mul(2).sub(1)
    sel = dead.unsqueeze(-1).to(case.device)
    k = torch.where(sel, (sign_k * k_mag).to(case.k), case.k)
    v = torch.where(sel, (sign_v * v_mag).to(case.v), case.v)
    return k, v


def padding_invariance(kernel: Kernel, case: AttentionCase) -> bool:
    """Any finite values at keys no query may attend to, huge ones included, leave out unchanged."""
    dead = ~case.full_mask.any(-2)  # (B, H, Lk): keys masked for every query row
    if not bool(dead.any()):
        return False
    budget = _budget(case, cotangent(case), grads=False)
    before = call_kernel(kernel, case)
    k, v = _huge_padding(case, dead)
    after = call_kernel(kernel, case, k=k, v=v)
    c = budget.compare("out", after, before, factor=2)
    if not c.ok:
        b = int((c.error - c.allowed).argmax())
        n = int(dead[b].sum())
        raise _fail(
            "padding_invariance",
            case,
            c.explain("the same call before the change")
            + f", after replacing the {n} masked keys/values of batch element {b} "
            "by huge finite values (k, v = xattn_ref.checks._huge_padding(case, ~case.full_mask.any(-2)))",
        )
    return True


def _key_padding_rows(case: AttentionCase) -> torch.Tensor | None:
    """The mask as ``(B, Lk)`` if it is the same for every head and query, else None."""
    if case.mask is None:
        return None
    full = case.full_mask
    rows = full[:, 0, 0, :]
    if not bool((full == rows[:, None, None, :]).all()):
        return None
    return rows


def compaction_equivalence(kernel: Kernel, case: AttentionCase) -> bool:
    """With a key-padding mask, each batch element's output equals the kernel applied to that
    element alone with its padding physically removed and ``mask=None``.

    Batch elements whose whole context is padding have nothing to compare with and are left to
    ``empty_rows_zero``.
    """
    rows = _key_padding_rows(case)
    if rows is None:
        return False
    budget = _budget(case, cotangent(case), grads=False)
    out = call_kernel(kernel, case)
    tested = False
    for b in range(case.q.shape[0]):
        keep = rows[b].nonzero().squeeze(-1)
        if keep.numel() == 0:
            continue
        tested = True
        q, k, v = case.q[b : b + 1], case.k[b : b + 1, :, keep], case.v[b : b + 1, :, keep]
        alone = call_kernel(kernel, case, q, k, v, mask=None)
        c = budget.compare("out", out[b : b + 1], alone, batch=slice(b, b + 1), factor=2)
        if not c.ok:
            message = c.explain(f"the kernel on batch element {b} alone, padding removed, mask=None,")
            raise _fail(
                "compaction_equivalence",
                case,
                message.replace("batch element 0", f"batch element {b}").replace("out[0", f"out[{b}", 1)
                + f"; compact call: kernel(q[{b}:{b + 1}], k[{b}:{b + 1}, :, keep], "
                f"v[{b}:{b + 1}, :, keep], None) with keep = {keep.tolist()}",
            )
    return tested


def reference_agreement(kernel: Kernel, case: AttentionCase) -> bool:
    """Output and gradients agree with the float64 reference within the tolerance model."""
    g = cotangent(case)
    out, grads = forward_backward(kernel, case, g)
    comparisons = _compare_all(_budget(case, g, grads=True), out, grads)
    _check_comparisons("reference_agreement", case, comparisons, "the float64 reference")
    return True


def _other_batch_element(case: AttentionCase, b0: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v with batch element b0 redrawn with large logits (std 100) and large values."""
    gen = torch.Generator().manual_seed(case.spec.seed + 3)
    q, k, v = (t.detach().clone() for t in (case.q, case.k, case.v))
    for t, std in ((q, 10.0), (k, 10.0), (v, 100.0)):
        t[b0] = (torch.randn(t[b0].shape, generator=gen, dtype=torch.float64) * std).to(t)
    return q, k, v


def _mask_without(case: AttentionCase, b0: int) -> torch.Tensor:
    """The mask, expanded over the batch, with batch element b0's context all padding."""
    full = case.full_mask
    mask = case.mask if case.mask is not None else full[:, :1, :1, :]
    mask = mask if mask.ndim == 4 else mask.unsqueeze(0).unsqueeze(0)
    mask = mask.expand(full.shape[0], *mask.shape[1:]).clone()
    mask[b0] = False
    return mask


def batch_independence(kernel: Kernel, case: AttentionCase) -> bool:
    """Changing one batch element (its values, or its mask to all padding) leaves the others
    unchanged."""
    batch = case.q.shape[0]
    if batch < 2:
        return False
    b0 = batch - 1
    budget = _budget(case, cotangent(case), grads=False)
    before = call_kernel(kernel, case)
    q, k, v = _other_batch_element(case, b0)
    changes = {
        f"batch element {b0} redrawn with logits of std 100": call_kernel(kernel, case, q, k, v),
        f"batch element {b0}'s context made all padding": call_kernel(
            kernel, case, mask=_mask_without(case, b0)
        ),
    }
    for change, after in changes.items():
        c = budget.compare("out", after[:b0], before[:b0], batch=slice(0, b0), factor=2)
        if not c.ok:
            raise _fail(
                "batch_independence", case, c.explain("the call before the change") + f", after {change}"
            )
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
    return (
        f"{name} was modified in place by the call: {int(diff.sum())} elements changed, first at "
        f"{index_str(name, index)}: {before[index].item()} -> {after[index].item()}"
    )


def no_input_mutation(kernel: Kernel, case: AttentionCase) -> bool:
    """q, k, v and mask are unchanged after the call (forward and backward)."""
    q, k, v = (t.detach().clone() for t in (case.q, case.k, case.v))
    mask = None if case.mask is None else case.mask.clone()
    out = call_kernel(kernel, case, q, k, v, mask=mask)
    originals = {"q": case.q, "k": case.k, "v": case.v}
    if mask is not None:
        originals["mask"] = case.mask  # type: ignore[assignment]
    passed = {"q": q, "k": k, "v": v, "mask": mask}
    for name, original in originals.items():
        message = _changed(name, original, passed[name])  # type: ignore[arg-type]
        if message is not None:
            raise _fail("no_input_mutation", case, message)
    del out
    return True


def _consistency(prop: str, kernel: Kernel, case: AttentionCase, baseline: AttentionCase) -> None:
    g = cotangent(case)
    out, grads = forward_backward(kernel, case, g)
    base_out, base_grads = forward_backward(
        kernel, baseline, g.to(dtype=baseline.dtype, device=baseline.device)
    )
    comparisons = _compare_all(_budget(case, g, grads=True), out, grads, (base_out, *base_grads))
    against = f"the same kernel in {dtype_name(baseline.dtype)} on {baseline.device}"
    _check_comparisons(prop, case, comparisons, against)


def dtype_consistency(kernel: Kernel, case: AttentionCase) -> bool:
    """A low-precision result (output and gradients) agrees with the same kernel in float64 on
    the same device (the CPU for MPS), within the tolerance model."""
    if case.dtype == torch.float64:
        return False
    device = "cpu" if case.device.type == "mps" else str(case.device)
    _consistency("dtype_consistency", kernel, case, case.to(dtype=torch.float64, device=device))
    return True


def device_consistency(kernel: Kernel, case: AttentionCase) -> bool:
    """A result on an accelerator (output and gradients) agrees with the same kernel in float64
    on the CPU, within the tolerance model."""
    if case.device.type == "cpu":
        return False
    _consistency("device_consistency", kernel, case, case.to(dtype=torch.float64, device="cpu"))
    return True


@dataclass(frozen=True)
class Property:
    """A named property and the check that tests it."""

    name: str
    check: Callable[[Kernel, AttentionCase], bool]

    @property
    def summary(self) -> str:
        doc = self.check.__doc__ or ""
        return " ".join(doc.split("\n\n")[0].split())


KERNEL_PROPERTIES: dict[str, Property] = {
    p.name: p
    for p in (
        Property("finite_output", finite_output),
        Property("finite_grad", finite_grad),
        Property("empty_rows_zero", empty_rows_zero),
        Property("padding_invariance", padding_invariance),
        Property("compaction_equivalence", compaction_equivalence),
        Property("reference_agreement", reference_agreement),
        Property("batch_independence", batch_independence),
        Property("no_input_mutation", no_input_mutation),
        Property("dtype_consistency", dtype_consistency),
        Property("device_consistency", device_consistency),
    )
}
