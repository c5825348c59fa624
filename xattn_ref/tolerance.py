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
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Comparison", "allowed_error", "compare", "magnitudes", "per_batch_max_error"]


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

    def explain(self, expected_name: str = "the float64 reference") -> str:
        """Where the worst violation is, with the values."""
        excess = self.error - self.allowed
        b = int(excess.argmax())
        a = self.actual[b].detach().to(device="cpu", dtype=torch.float64)
        t = self.expected[b].detach().to(device="cpu", dtype=torch.float64)
        diff = (a - t).abs().nan_to_num(nan=float("inf"))
        flat = int(diff.reshape(-1).argmax())
        index = (b, *(int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape)))
        where = f"{self.what}[{', '.join(str(i) for i in index)}]"
        return (
            f"{where} = {a.reshape(-1)[flat].item():.6g} but {expected_name} gives "
            f"{t.reshape(-1)[flat].item():.6g}: error {self.error[b].item():.3g} > allowed "
            f"{self.allowed[b].item():.3g} in batch element {b}"
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
