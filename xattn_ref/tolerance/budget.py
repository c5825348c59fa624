"""The budget types: a :class:`Budget` per case (the truth, the allowance per element, its
parts) and the :class:`Comparison` every property goes through; the rounding units (TF32,
underflow). The model is derived in :mod:`xattn_ref.tolerance`."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "Budget",
    "Comparison",
    "SMALLEST_TILE",
    "TF32_EPS",
    "format_pair",
    "matmul_eps",
    "per_batch_max_error",
    "underflow_unit",
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
    err = _error(actual, truth)
    return _row_max(err, err.shape[0])


def _error(actual: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    a = actual.detach().to(device="cpu", dtype=torch.float64)
    e = expected.detach().to(device="cpu", dtype=torch.float64)
    return (a - e).abs().nan_to_num(nan=math.inf, posinf=math.inf)


@dataclass(frozen=True)
class Comparison:
    """The outcome of :meth:`Budget.compare`: the error and the allowance of every element."""

    what: str
    actual: torch.Tensor
    expected: torch.Tensor
    allowed: torch.Tensor  # float64 on the CPU, broadcastable to the error
    batched: bool = True  # dim 0 is the batch (not so for a parameter's gradient)

    @functools.cached_property
    def error(self) -> torch.Tensor:
        return _error(self.actual, self.expected)

    @property
    def ok(self) -> bool:
        return bool((self.error <= self.allowed).all())

    def explain(self, expected_name: str = "the float64 reference", *, offset: int = 0) -> str:
        """The worst element (the largest excess over its allowance), with the values (``offset``:
        the batch index of the first element compared)."""
        allowed = self.allowed.expand_as(self.error)
        excess = (self.error - allowed).reshape(-1)
        flat = int(excess.argmax())
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), self.error.shape))
        a = self.actual.detach().reshape(-1)[flat].item()
        e = self.expected.detach().reshape(-1)[flat].item()
        got, want = format_pair(a, e)
        where = f"{self.what}[{', '.join(str(i) for i in (index[0] + offset, *index[1:]))}]"
        error = self.error.reshape(-1)[flat].item()
        batch = f" in batch element {index[0] + offset}" if self.batched else ""
        return (
            f"{where} = {got} but {expected_name} gives {want}: error {error:.3g} "
            f"> allowed {allowed.reshape(-1)[flat].item():.3g}{batch}"
        )


@dataclass(frozen=True)
class Budget:
    """The tolerance model for one case, per quantity (``out`` or ``y``, and the gradients):
    the float64 truth, the plain same-dtype error (per row, or per batch element for layers),
    the first-order floor (per element), and the rule (2 for outputs, 3 for gradients, as
    flash-attention's tests)::

        allowed = factor * (rule * plain_error + floor)
    """

    truth: dict[str, torch.Tensor]
    plain_error: dict[str, torch.Tensor]
    floor: dict[str, torch.Tensor]
    rule: dict[str, float]
    dtype: torch.dtype
    #: per element, the largest magnitude a partial sum of the quantity may take (the sum of its
    #: terms' sizes): where it passes the dtype's range, a blocked sum kept in T may overflow
    reach: dict[str, torch.Tensor] = field(default_factory=dict)
    #: the quantities with no batch dim (a layer parameter's gradient, a sum over the batch)
    unbatched: frozenset[str] = frozenset()
    #: each quantity's floor term by term, where the model derives it (kernels: ``logits``,
    #: ``weights``, ``dP``, ``delta``, ``dS``, ``sums``, ``rounding``, ``underflow``; they add
    #: up to :attr:`floor`): what an allowance is made of (``scripts/tightness.py --parts``)
    parts: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.truth)

    def allowed(self, name: str, *, batch: slice = slice(None), factor: float = 1.0) -> torch.Tensor:
        """The allowance of every element of ``name`` (batch elements ``batch``), float64 on the CPU."""
        return factor * (self.rule[name] * self.plain_error[name][batch] + self.floor[name][batch])

    def compare(
        self,
        name: str,
        actual: torch.Tensor,
        expected: torch.Tensor | None = None,
        *,
        batch: slice = slice(None),
        factor: float = 1.0,
    ) -> Comparison:
        """``actual`` against ``expected`` (default: the truth) for the batch elements ``batch``.
        ``factor=2`` when both sides are results in the case's dtype that should equal the truth.
        Where the truth is beyond the dtype's range, an infinity of its sign is correct."""
        exp = self.truth[name][batch] if expected is None else expected
        allowed = self.allowed(name, batch=batch, factor=factor)
        return Comparison(
            name,
            self.settle(name, actual, batch),
            self.settle(name, exp, batch),
            allowed,
            batched=name not in self.unbatched,
        )

    def overflows(self, name: str, batch: slice = slice(None)) -> tuple[torch.Tensor, torch.Tensor]:
        """Bool, ``(up, down)``: where the truth, within its allowance, reaches above the dtype's
        largest finite value, and below its most negative one. A value there that a correct result
        may take rounds to ``+inf`` (``-inf``), so that infinity is within the allowance. Where a
        partial sum may pass the range (:attr:`reach`), an infinity of either sign is."""
        truth, allowed = self.truth[name][batch], self.allowed(name, batch=batch)
        top = torch.finfo(self.dtype).max
        up, down = truth + allowed >= top, truth - allowed <= -top
        partial = self.spills(name, batch)
        return up | partial, down | partial

    def spills(self, name: str, batch: slice = slice(None)) -> torch.Tensor:
        """Bool: where a partial sum of ``name`` may pass the dtype's range (:attr:`reach`)."""
        if name not in self.reach:
            return torch.zeros((), dtype=torch.bool)
        return self.reach[name][batch] >= torch.finfo(self.dtype).max

    def settle(self, name: str, result: torch.Tensor, batch: slice = slice(None)) -> torch.Tensor:
        """``result`` with the infinities within the allowance (see :meth:`overflows`) replaced by
        the truth (float64, CPU), and the NaNs where a partial sum may pass the range: partial
        sums that overflow to both infinities add up to NaN (a group of query heads' dk summed in
        T: +inf + inf - inf), which says no more and no less than an infinity of either sign
        there. Unchanged when there are none."""
        up, down = self.overflows(name, batch)
        if not bool((up | down).any()):
            return result
        r = result.detach().to(device="cpu", dtype=torch.float64)
        legit = (up & (r == torch.inf)) | (down & (r == -torch.inf)) | (self.spills(name, batch) & r.isnan())
        return torch.where(legit, self.truth[name][batch], r)


#: The smallest block of queries (or keys) whose float32 sum a blocked backward adds into a
#: gradient kept in the input dtype: torch's CPU flash-attention backward adds each block of 32
#: queries into dk and dv in the input dtype (``FlashAttentionKernel.cpp``); flash-attention's
#: tiles are 64 or more and keep the sums in float32. A sum of n terms in such a kernel is
#: rounded to T up to ``ceil(n / 32)`` times; one rounded per term is the defect
#: ``known_bad.half_accumulator``.
SMALLEST_TILE = 32

#: Unit of one rounding in TF32 (10 mantissa bits), what float32 matmuls round to on a CUDA
#: device whose float32 matmul precision is not "highest".
TF32_EPS = 2.0**-10


def matmul_eps(dtype: torch.dtype, device: str | torch.device) -> tuple[float, str | None]:
    """The rounding unit of matmuls in ``dtype`` on ``device``, and a note when it is TF32."""
    tf32 = torch.get_float32_matmul_precision() != "highest" or torch.backends.cuda.matmul.allow_tf32
    if dtype == torch.float32 and torch.device(device).type == "cuda" and tf32:
        return TF32_EPS, "float32 matmuls run in TF32 on cuda: float32 budgets use TF32 rounding"
    return torch.finfo(dtype).eps, None


def _rounding_unit(case: Any, tf32: bool | None) -> float:
    """T's rounding unit for the budget of ``case``: TF32's for float32 where matmuls run in TF32
    (:func:`matmul_eps`, from the device's settings; ``tf32`` overrides them)."""
    if tf32 is None:
        return matmul_eps(case.dtype, case.device)[0]
    return TF32_EPS if tf32 and case.dtype == torch.float32 else torch.finfo(case.dtype).eps


def underflow_unit(dtype: torch.dtype, *, flush_to_zero: bool) -> float:
    """How far one rounding near zero in ``dtype`` may be off: the subnormal spacing, or with
    ``flush_to_zero`` the smallest normal float32 where that is larger (float32 and bfloat16,
    whose arithmetic is float32's). GPU kernels are often built to flush float32 subnormals to
    zero (nvcc ``--use_fast_math``, Triton), and a flushed value is off by up to that much."""
    info = torch.finfo(dtype)
    spacing = info.smallest_normal * info.eps
    if flush_to_zero and dtype != torch.float64:
        return max(spacing, torch.finfo(torch.float32).smallest_normal)
    return spacing


def _row_max(t: torch.Tensor, rows: int) -> torch.Tensor:
    """The largest element of each of ``rows`` rows of ``t`` (0 for an empty row)."""
    flat = t.reshape(rows, -1)
    return flat.amax(-1) if flat.shape[-1] else flat.new_zeros(rows)


def _finite_or_zero(t: torch.Tensor) -> torch.Tensor:
    # A non-finite plain result would make the budget infinite and the check vacuous.
    return torch.where(t.isfinite(), t, 0.0)
