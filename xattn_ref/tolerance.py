"""The tolerance model: how far a result may be from the float64 truth.

The rule (flash-attention's): a result computed in dtype T is compared with the float64 truth
on *the same inputs* (the T-valued inputs, upcast exactly). The budget is set by the error
that a plain implementation makes in T on those inputs::

    allowed[b] = 2 * plain_error[b] + eps(T) * magnitude[b]
    plain_error[b] = max|plain[b] - truth[b]|

per batch element ``b`` (batch elements are drawn with different scales, so one budget per
element keeps a large element from hiding an error in a small one). ``plain`` is the guarded
attention of :mod:`xattn_ref.reference` run in T instead of float64: scores, a max-shifted
softmax and ``p @ v``, each rounded to T, which is what a straightforward kernel does.

The floor ``eps(T) * magnitude[b]`` is one rounding of the terms summed to form the
quantity, for results that a plain kernel happens to get exactly right (one key: ``out = v``
and ``dq = 0``) while another correct kernel is a few roundings away. Each attention weight
``P_ij = exp(s_ij - max_j s_ij) / sum`` carries a relative error of about ``eps * A``, where
``A = 1 + max_ij scale * sum_d |q_id| |k_jd|`` is the absolute size of the logits (rounding the
logit is an absolute error, and ``exp`` turns it into a relative one). With ``s`` the scale,
``g = d loss / d out`` and ``|dP| = max_ij sum_e |g_ie| |v_je|`` (the terms of ``dP = g v^T``,
which may cancel to almost nothing while their rounding errors do not):

    out = P v        magnitude = A * max|v|
    dv  = P^T g      magnitude = A * Lq * max|g|
    dq  = s dS k     magnitude = A * 2 s |dP| max|k|          (|dS_ij| <= 2 P_ij |dP|)
    dk  = s dS^T q   magnitude = A * 2 s |dP| max|q| * Lq

Two results in T that should both equal the same truth (the output before and after changing
the padding, say) may differ by the sum of their budgets: ``factor=2``. In float64 the plain
implementation *is* the reference, so only the floor remains.
Nothing here is tuned per test; the factor 2 and the one-rounding floor are the whole model.

Layers (``fn(x, context, context_mask)``) have no reference: the layer's own float64 result on
the same (exactly upcast) inputs and parameters is the truth. A layer is a chain of sums no
longer than ``n = E + E_ctx + Lk`` terms (projections, then attention), and a sum of ``n``
terms rounded in T is off by at most about ``n * eps(T)`` times its magnitude, so per batch
element ``allowed[b] = n * eps(T) * max|y_float64[b]|`` (``plain_error`` is 0). Deliberately
loose: it catches NaN, padding that leaks into the output and outputs that depend on a fully
padded context, not ulps.

:class:`Budget` holds all of it for one case; :meth:`Budget.compare` is the one comparison
that every property of every kind of target goes through.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "Budget",
    "Comparison",
    "allowed_error",
    "compare",
    "format_pair",
    "kernel_budget",
    "layer_budget",
    "magnitudes",
    "per_batch_max_error",
]


def format_pair(a: float, b: float) -> tuple[str, str]:
    """``a`` and ``b`` with enough significant digits to see that they differ (3 to 17)."""
    if math.isfinite(a) and math.isfinite(b) and a != b:
        scale = max(abs(a), abs(b))
        digits = min(17, max(3, math.ceil(math.log10(scale / abs(a - b))) + 2))
    else:
        digits = 3 if a != b else 17
    return f"{a:.{digits}g}", f"{b:.{digits}g}"


def per_batch_max_error(actual: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """``max |actual - truth|`` per batch element (dim 0), in float64 on the CPU; NaN counts as inf."""
    a = actual.detach().to(device="cpu", dtype=torch.float64)
    t = truth.detach().to(device="cpu", dtype=torch.float64)
    err = (a - t).abs().nan_to_num(nan=float("inf"))
    return err.reshape(err.shape[0], -1).amax(-1) if err[0].numel() else err.new_zeros(err.shape[0])


def _per_batch_max(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().to(device="cpu", dtype=torch.float64).abs()
    return t.reshape(t.shape[0], -1).amax(-1) if t[0].numel() else t.new_zeros(t.shape[0])


def magnitudes(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, scale: float
) -> dict[str, torch.Tensor]:
    """The magnitude of each quantity per batch element: ``out``, ``dq``, ``dk``, ``dv``."""
    dp = _per_batch_max(
        torch.einsum("bhie,bhje->bhij", g.to("cpu", torch.float64).abs(), v.to("cpu", torch.float64).abs())
    )
    logits = 1 + abs(scale) * _per_batch_max(
        torch.einsum("bhid,bhjd->bhij", q.to("cpu", torch.float64).abs(), k.to("cpu", torch.float64).abs())
    )
    lq = q.shape[2]
    return {
        "out": logits * _per_batch_max(v),
        "dv": logits * lq * _per_batch_max(g),
        "dq": logits * 2 * abs(scale) * dp * _per_batch_max(k),
        "dk": logits * 2 * abs(scale) * dp * _per_batch_max(q) * lq,
    }


def allowed_error(
    truth: torch.Tensor,
    plain: torch.Tensor,
    magnitude: torch.Tensor,
    dtype: torch.dtype,
    *,
    factor: float = 1.0,
) -> torch.Tensor:
    """The budget per batch element (see the module docstring), times ``factor``."""
    floor = torch.finfo(dtype).eps * magnitude + torch.finfo(torch.float64).tiny
    plain_error = per_batch_max_error(plain, truth)
    # A non-finite plain result would make the budget infinite and the check vacuous.
    plain_error = torch.where(plain_error.isfinite(), plain_error, 0.0)
    return factor * (2 * plain_error + floor)


@dataclass(frozen=True)
class Comparison:
    """The outcome of :func:`compare`: errors and budgets per batch element."""

    what: str
    error: torch.Tensor
    allowed: torch.Tensor
    actual: torch.Tensor
    expected: torch.Tensor

    @property
    def ok(self) -> bool:
        return bool((self.error <= self.allowed).all())

    def explain(self, expected_name: str = "the float64 reference", *, offset: int = 0) -> str:
        """Where the worst violation is, with the values (``offset``: the batch index of the first
        element compared)."""
        excess = self.error - self.allowed
        b = int(excess.argmax())
        a = self.actual[b].detach().to(device="cpu", dtype=torch.float64)
        t = self.expected[b].detach().to(device="cpu", dtype=torch.float64)
        diff = (a - t).abs().nan_to_num(nan=float("inf"))
        flat = int(diff.reshape(-1).argmax())
        index = (b + offset, *(int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape)))
        where = f"{self.what}[{', '.join(str(i) for i in index)}]"
        got, want = format_pair(a.reshape(-1)[flat].item(), t.reshape(-1)[flat].item())
        return (
            f"{where} = {got} but {expected_name} gives {want}: error {self.error[b].item():.3g} "
            f"> allowed {self.allowed[b].item():.3g} in batch element {b + offset}"
        )


def compare(
    what: str,
    actual: torch.Tensor,
    expected: torch.Tensor,
    truth: torch.Tensor,
    plain: torch.Tensor,
    magnitude: torch.Tensor,
    dtype: torch.dtype,
    *,
    factor: float = 1.0,
) -> Comparison:
    """Compare ``actual`` with ``expected`` under the budget set by ``plain`` against ``truth``
    and the ``magnitude`` of the quantity (from :func:`magnitudes`).

    ``expected`` is usually ``truth`` itself; it differs when comparing two results in the same
    dtype (then pass ``factor=2``).
    """
    return Comparison(
        what=what,
        error=per_batch_max_error(actual, expected),
        allowed=allowed_error(truth, plain, magnitude, dtype, factor=factor),
        actual=actual,
        expected=expected,
    )


@dataclass(frozen=True)
class Budget:
    """The tolerance model for one case: per quantity (``out`` or ``y``, and gradients), the
    float64 truth, the plain same-dtype error and the magnitude, all per batch element."""

    truth: dict[str, torch.Tensor]
    plain_error: dict[str, torch.Tensor]
    magnitude: dict[str, torch.Tensor]
    dtype: torch.dtype

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.truth)

    def allowed(self, name: str, *, batch: slice = slice(None), factor: float = 1.0) -> torch.Tensor:
        """``factor * (2 * plain_error + eps * magnitude)`` per batch element."""
        floor = torch.finfo(self.dtype).eps * self.magnitude[name][batch] + torch.finfo(torch.float64).tiny
        return factor * (2 * self.plain_error[name][batch] + floor)

    def compare(
        self,
        name: str,
        actual: torch.Tensor,
        expected: torch.Tensor | None = None,
        *,
        batch: slice = slice(None),
        factor: float = 1.0,
    ) -> Comparison:
        """``actual`` against ``expected`` (default: the truth) for the batch elements ``batch``."""
        exp = self.truth[name][batch] if expected is None else expected
        return Comparison(
            what=name,
            error=per_batch_max_error(actual, exp),
            allowed=self.allowed(name, batch=batch, factor=factor),
            actual=actual,
            expected=exp,
        )


def kernel_budget(case: Any, g: torch.Tensor, *, grads: bool) -> Budget:
    """The budget of a kernel case (:class:`~xattn_ref.cases.AttentionCase`) for the cotangent
    ``g``: truth from :func:`xattn_ref.reference.attention` on the exactly upcast inputs, the plain
    result from the same guarded attention run in the case's dtype."""
    from xattn_ref._kernel import guarded_attention
    from xattn_ref.reference import default_scale

    scale = default_scale(case.q.shape[-1])
    names = ("out", "dq", "dk", "dv") if grads else ("out",)

    def run(dtype: torch.dtype) -> dict[str, torch.Tensor]:
        device = "cpu" if case.device.type == "mps" else case.device
        q, k, v = (
            t.detach().to(device=device, dtype=dtype).requires_grad_(grads) for t in case.inputs().values()
        )
        mask = None if case.mask is None else case.mask.to(device)
        out = guarded_attention(q, k, v, mask, scale, dtype)
        values = [out]
        if grads:
            values += torch.autograd.grad(out, (q, k, v), grad_outputs=g.to(device=device, dtype=dtype))
        return {n: t.detach() for n, t in zip(names, values)}

    truth, plain = run(torch.float64), run(case.dtype)
    mags = magnitudes(case.q, case.k, case.v, g, scale)
    return Budget(
        truth=truth,
        plain_error={n: _finite_or_zero(per_batch_max_error(plain[n], truth[n])) for n in names},
        magnitude={n: mags[n] for n in names},
        dtype=case.dtype,
    )


def layer_budget(call: Callable[[Any], torch.Tensor], case: Any, terms: int) -> Budget:
    """The budget of a layer case: the layer's own float64 result is the truth, and
    ``allowed[b] = terms * eps * max|truth[b]|`` (``terms = E + E_ctx + Lk``)."""
    device = "cpu" if case.device.type == "mps" else str(case.device)
    with torch.no_grad():
        truth = call(case.to(dtype=torch.float64, device=device)).detach().double().cpu()
    finite = truth.nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)  # a NaN truth must not make it vacuous
    return Budget(
        truth={"y": truth},
        plain_error={"y": torch.zeros(truth.shape[0], dtype=torch.float64)},
        magnitude={"y": terms * _per_batch_max(finite)},
        dtype=case.dtype,
    )


def _finite_or_zero(t: torch.Tensor) -> torch.Tensor:
    # A non-finite plain result would make the budget infinite and the check vacuous.
    return torch.where(t.isfinite(), t, 0.0)
