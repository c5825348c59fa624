"""The tolerance model: how far a result may be from the float64 truth, and why.

A result computed in dtype T is compared with the float64 truth on *the same inputs* (the
T-valued inputs, upcast exactly), element by element::

    allowed = rule * plain_error + floor          (rule: 2 for out, 3 for dq, dk, dv)

- ``plain_error``: the error of the plain implementation in T on these inputs, per row (per
  key for dk and dv): scores, weights and output each accumulated in float32 and rounded once
  to T (:func:`xattn_ref._kernel.plain_attention`). ``rule * plain_error`` is
  flash-attention's test rule: a kernel may be twice (three times for gradients) as far from
  the truth as a straightforward implementation.
- ``floor``: a first-order bound of the error of *any* implementation that rounds each stage
  once in T, computed per element from the float64 truth. It covers the rows a plain
  implementation happens to get exactly right while another correct kernel does not.

Derivation of the floor. Notation: ``s`` the scale, ``S_ij = s q_i·k_j``, ``z_ij`` the logit
(``S_ij``, plus a bias if any), ``m_i = max_j z_ij``, ``P`` the guarded softmax over allowed
keys, ``out = P v``, ``g = d loss / d out``, ``eps`` the rounding unit of T (TF32's for float32
matmuls on CUDA below "highest" precision; one rounding to nearest is off by at most
``u = eps / 2``, a library ``exp`` by one ulp, ``2u``), ``eps_acc`` that of the accumulator, ``n``
the number of terms of a sum. Sums of many terms are accumulated in float32, also for half
inputs (flash-attention's rule: a half-precision accumulator is a defect,
``known_bad.half_accumulator`` and ``half_softmax``), and a sum of n terms in any order is off
by at most ``n eps_acc sum|terms|`` (``n u_acc`` in the output's floor).

1. Each weight before normalization, ``exp(z_ij - m_i)``, carries a relative error ``r_ij``:
   scaling q and k (``q·s``, or each by ``sqrt(s)`` as SDPA does) are absolute errors of at most
   ``u a_ij`` each, ``a_ij = |s| sum_d |q_id||k_jd|``; rounding ``S_ij``, ``S_ij + b_ij`` and
   ``z_ij - m_i`` adds ``u`` times each of their sizes; the accumulation of the D products adds
   at most ``u_dot D a_ij`` in any order (``u_dot``: float32's, float64's for float64 inputs;
   with one dominant product, every later addition rounds at its size: SDPA's float32 CPU
   kernel is off by 6 ``eps a`` at D = 64); and ``exp`` one ulp::

       r_ij = u (2 a_ij + |S_ij| (+ |z_ij|) + |z_ij - m_i| + 2) + u_dot D a_ij

   Normalizing cancels the common part: the normalized weight is off by
   ``pi_ij = P_ij ((1 - P_ij) r_ij + sum_{k != j} P_ik r_ik)`` to first order, which vanishes
   when one key takes all the weight. That holds while ``r`` is small; a bfloat16 logit of 1000
   is off by up to 4, enough to change which key a row attends to. So the weights' errors are
   bounded exactly, for logits each off by at most ``r_ij`` (:func:`_saturated`): ``P'_ij`` lies
   between ``P e^-r / (P e^-r + B - P e^r)`` and ``P e^r / (P e^r + A - P e^-r)`` (``A = sum_k
   P_ik e^-r_ik``, ``B = sum_k P_ik e^r_ik``), and an average ``sum_j P'_ij x_j`` moves by at
   most ``sum_j P_ij expm1(r_ij) |x_j - <x>_i| / A_i``, and never beyond the farthest ``x_j``;
   both are ``pi`` and ``P r`` to first order. What normalizing does not cancel: the division
   and the weight's storage in T (``2u P_ij``), and the row sum of n terms, which scales every
   weight of the row alike (``n u_acc P_ij``). A weight that underflows into T's subnormals is
   off by ``eta`` (the subnormal spacing) instead.
2. ``out_i = sum_j P_ij v_j``: the common scaling of the row's weights moves ``out_i`` by its
   size, and ``sum_j P_ij rho_j v_j = sum_j P_ij rho_j (v_j - out_i) + out_i sum_j P_ij rho_j``;
   with the sum's accumulation (``u_acc n sum_j P_ij |v_j|``) and the output's rounding::

       floor_out = min(sum_j P_ij expm1(r_ij) |v_j - out_i| / A_i, max_j |v_j - out_i|)
                   + sum_j 2u P_ij |v_j - out_i| + 3u |out_i| + u_acc n (sum_j P_ij |v_j| + |out_i|)

3. The gradients count each rounding at ``eps`` (a margin of 2 over ``u``: they chain more
   operations, and kernels order them in more ways). Backward passes recompute
   ``P = exp(S - lse)`` from a stored logsumexp, whose error does not cancel:
   ``pg_ij = P_ij (eps_acc (2 L_i + 2) + 2 eps_dot D max_k a_ik + eps_acc n)``, ``L_i = max_j
   a_ij + log(n + 1) >= |lse_i|`` (the logsumexp is kept in the accumulator's dtype, as
   flash-attention, xformers, cuDNN and torch keep it: one kept in T is a defect,
   ``known_bad.half_logsumexp``; its own rounding, that of the largest logit it was shifted by, the
   accumulation order of S, which a backward that recomputes S need not share with the
   forward that made the lse: off by that much even where one key takes all the weight; and the
   row sum). The first-order weight errors are ``r_ij = eps (3 a_ij + 1) + eps_dot D a_ij`` (``a``
   with ``|b_ij|`` added, and a fourth rounding, under a bias) and their ``pi`` (exact, as
   above; delta's part of them at most the farthest ``|dP_ij - delta_i|``). Then, with
   ``dP = g v^T`` (terms ``c_ij = sum_e |g_ie||v_je|``), ``delta_i = sum_j P_ij dP_ij`` and
   ``dS = P (dP - delta)``: ``dP_ij`` is off by ``e_ij = (eps + eps_acc Dv) c_ij`` (one rounding,
   Dv accumulated terms); ``delta_i`` by ``d_i = sum_j (P r + pg)_ij |dP_ij - delta_i| + sum_j
   P_ij e_ij + eps_acc n sum_j P_ij |dP_ij| + (eps + eps_acc Dv) sum_e |g_ie||out_ie| + u_acc n
   sum_j P_ij c_ij`` (the last: a backward that takes ``delta_i`` as ``g_i·out_i`` from the
   forward's output, as flash-attention's does, carries that output's sum of n terms); and
   ``dS_ij`` by ``f_ij = (pi + pg)_ij |dP_ij - delta_i| + P_ij e_ij + P_ij d_i + 2 eps |dS_ij|
   (+ eta (|dP_ij| + |delta_i| + 1 + 1/|s|))`` (the difference and the product of ``dS`` rounded,
   each once; in the subnormals a rounding is ``eta`` whatever the size: an underflowed weight
   meets ``dP`` and ``delta`` apart in a backward that differentiates the normalization by the
   quotient rule, and a kernel that folds the scale into ``dS`` rounds ``s dS``, which ``|k|``
   or ``|q|`` then multiplies without ``s``), and at
   the row's largest logit also ``eps_acc n sum_j |dS_ij|`` (a kernel that differentiates through
   its shift ``m_i`` adds ``-sum_j dS_ij`` there, zero in exact arithmetic), and at every key
   ``eta_acc sum_j (|dP_ij| + |delta_i|)`` (the accumulator's subnormal spacing: an online
   softmax that differentiates through its running maximum meets, at a key that was one, two
   cancelling paths through a rescale factor ``exp(m_old - m_new)`` that underflowed). So (each result also
   ``+ eta (n + 4)``: near the subnormals, the rounding of its n terms and of the at most 4
   operations before them)::

       floor_dv = (pi + pg)^T |g| + (eps_acc n + u t) P^T |g| + eps |dv|    (n: queries of key j)
       floor_dq = |s| f |k| + (eps_acc n + u t) |s| |dS| |k| + eps |dq|
       floor_dk = |s| f^T |q| + (eps_acc n + u t) |s| |dS|^T |q| + eps |dk|

   (``t = ceil(n / 32)``: a blocked backward may add each block's float32 sum into a gradient
   kept in T, rounding once per block; torch's CPU flash-attention backward does, with blocks
   of 32 queries: :data:`SMALLEST_TILE`.)

Flush to zero. On CUDA, kernels are often built to flush float32 subnormals to zero (nvcc
``--use_fast_math``, Triton): a value below the smallest normal float32 becomes 0, off by up to
that number. There ``eta`` and ``eta_acc`` are that number (about 1.2e-38) for float32 and
bfloat16 (whose arithmetic is float32's), not the subnormal spacing (:func:`underflow_unit`;
seen on an H200: SDPA's efficient backend gave dk = 0 where the truth is -2.25e-41).

Dialects. A non-default scale is ``s`` itself. A bias ``b_ij`` on the logits is counted in
``z`` above. A causal mask is part of the allowed keys.
With grouped-query attention the model runs on k and v repeated to every query head, and dk
and dv are sums over the G heads of a group: the truth is that sum, and the floor the sum of
the per-head floors times G (one accumulation over all G n terms: each ``n eps sum|terms|``
bound grows at most G-fold).

In float64 the truth is computed in the same precision, so it carries the same first-order
error as the result: the floor counts both sides (twice). (It multiplies by the scale last, so a
subnormal ``dS`` is not rounded before ``|q|`` multiplies it.)

Infinities. Where ``truth + allowed`` reaches past T's largest finite value, a value a correct
result may take rounds to ``+inf`` (likewise ``-inf`` below), so that infinity is within the
allowance (:meth:`Budget.settle`); so is one of either sign where the sizes of a gradient's
terms sum past the range (a blocked backward's partial sum kept in T may overflow there:
:attr:`Budget.reach`); anywhere else an infinity is an error. A plain result that is
not finite measures nothing: its error counts as zero, and the floor stands alone.

Two results in T that should both equal the same truth (the output before and after changing
the padding, say) may differ by the sum of their budgets: ``factor=2``. Nothing here is tuned:
the rule and the first-order terms are the whole model. ``scripts/tightness.py`` measures how
tight it is and ``scripts/false_failures.py`` that correct kernels never exceed it.

Layers (``fn(x, context, context_mask)``) have no reference: the layer's own float64 result on
the same (exactly upcast) inputs and parameters is the truth, and a plain run's error is
measured, not derived (:func:`layer_budget`): how far the float64 output moves when every input
is rounded once (``S``, once per stage of the layer), and how far the gradients move when every
operation of the layer has its inputs and results off by their roundings in T
(Monte Carlo arithmetic: :mod:`xattn_ref._perturbed`). The output keeps a loose floor (it
catches NaN, padding that leaks into the output and outputs that depend on a fully padded
context, not ulps); the gradients are judged against three times the measured error, except
where a value lies near a ReLU's or another kink's point, where a rounding may switch a unit and
only gross errors are caught.

:class:`Budget` holds all of it for one case; :meth:`Budget.compare` is the one comparison
that every property of every kind of target goes through.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "LAYER_ROUNDINGS",
    "LAYER_SAMPLES",
    "LAYER_STAGES",
    "SMALLEST_TILE",
    "TF32_EPS",
    "Budget",
    "Comparison",
    "format_pair",
    "kernel_budget",
    "layer_budget",
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
        if name in self.reach:
            partial = self.reach[name][batch] >= top
            up, down = up | partial, down | partial
        return up, down

    def settle(self, name: str, result: torch.Tensor, batch: slice = slice(None)) -> torch.Tensor:
        """``result`` with the infinities within the allowance (see :meth:`overflows`) replaced by
        the truth (float64, CPU); unchanged when there are none."""
        up, down = self.overflows(name, batch)
        if not bool((up | down).any()):
            return result
        r = result.detach().to(device="cpu", dtype=torch.float64)
        legit = (up & (r == torch.inf)) | (down & (r == -torch.inf))
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


def _saturated(p: torch.Tensor, r: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """How far the weights ``P = softmax(z)`` of each row move when every logit ``z_ij`` moves by
    up to ``r_ij``, exactly (not to first order, which fails once ``r`` nears 1: a bfloat16
    logit of 1000 is off by up to 4, enough to swap a row's largest weight):

    - ``moved_ij = P_ij expm1(r_ij) / sum_k P_ik exp(-r_ik)``: with ``sum_j`` over
      ``|x_j - <x>_P|`` it bounds how far any average ``sum_j P_ij x_j`` moves (first order:
      ``P_ij r_ij``);
    - ``w_ij``: how far the weight ``P_ij`` itself moves, the larger of
      ``P e^r / (P e^r + A - P e^-r) - P`` and ``P - P e^-r / (P e^-r + B - P e^r)``,
      ``A = sum_k P_ik e^-r_ik``, ``B = sum_k P_ik e^r_ik`` (first order: ``P_ij ((1 - P_ij)
      r_ij + sum_{k != j} P_ik r_ik)``, which vanishes when one key takes all the weight).
    """
    r = torch.where(m, r, 0.0).clamp(max=300.0)  # e^300 is finite in float64; w <= 1 long before
    up, down = torch.exp(r), torch.exp(-r)
    lo = (p * down).sum(-1, keepdim=True)
    hi = (p * up).sum(-1, keepdim=True)
    moved = p * torch.expm1(r) / torch.where(lo > 0, lo, 1.0)
    pu, pd = p * up, p * down
    upper = pu / torch.where(pu + lo - pd > 0, pu + lo - pd, 1.0) - p
    lower = p - pd / torch.where(pd + hi - pu > 0, pd + hi - pu, 1.0)
    return moved * m, torch.maximum(upper, lower).clamp(min=0.0) * m


def _terms(n: torch.Tensor) -> torch.Tensor:
    # A sum of n terms, in any order (a plain loop included), rounds each term at most n times.
    return n.to(torch.float64)


def kernel_budget(
    case: Any, g: torch.Tensor, *, grads: bool, tf32: bool | None = None, flush_to_zero: bool | None = None
) -> Budget:
    """The budget of a kernel case (:class:`~xattn_ref.cases.AttentionCase`) for the cotangent
    ``g``: the truth and the first-order floor from the float64 computation on the exactly upcast
    inputs (see the module docstring), the plain error from the same guarded attention run in
    the case's dtype. ``tf32``: whether float32 matmuls round to TF32 (default: as this device
    and torch's settings say). ``flush_to_zero``: whether float32 subnormals may be flushed to
    zero (:func:`underflow_unit`; default: on CUDA)."""
    from xattn_ref._kernel import expand_kv, plain_attention

    f64, cpu = torch.float64, "cpu"
    scale = case.effective_scale
    heads, groups = case.q.shape[1], case.groups
    q = case.q.detach().to(device=cpu, dtype=f64)
    # grouped-query: the model runs on k and v repeated to every query head; dk and dv are the
    # sums over each group (and so are their floors)
    k, v = (expand_kv(t.detach().to(device=cpu, dtype=f64), heads) for t in (case.k, case.v))
    bias = None if case.bias is None else case.bias.detach().to(device=cpu, dtype=f64)
    m = case.full_mask.to(cpu)
    eps = _rounding_unit(case, tf32)
    # Sums of many terms (P v, g v^T, delta, dS k, ...) are accumulated in float32, also for half
    # inputs (flash-attention's rule; a half-precision accumulator is a defect:
    # known_bad.half_accumulator, half_softmax): n terms are off by eps_acc n sum|terms|
    eps_acc = torch.finfo(torch.float32).eps if case.dtype in (torch.float16, torch.bfloat16) else eps

    s = scale * q @ k.transpose(-2, -1)
    s = s if bias is None else s + bias
    shift = torch.where(m, s, -torch.inf).amax(-1, keepdim=True).nan_to_num(0.0, neginf=0.0)
    e = torch.exp(torch.where(m, s - shift, 0.0)) * m
    total = e.sum(-1, keepdim=True)
    p = e / torch.where(total > 0, total, 1.0)
    out = p @ v
    a0 = abs(scale) * q.abs() @ k.abs().transpose(-2, -1)  # |s| sum_d |q_id||k_jd|
    a = a0 if bias is None else a0 + bias.abs()  # s + bias rounds relative to |s| + |bias|
    # r: bound on the relative error of each unnormalized weight (q·scale and s rounded, then exp);
    # pi: bound on the error of each normalized weight, P_ij (r_ij - sum_k P_ik r_ik) to first
    # order, which vanishes when one key takes all the weight
    # eta: the absolute error of a weight that underflows into T's subnormals
    ftz = case.device.type == "cuda" if flush_to_zero is None else flush_to_zero
    eta = underflow_unit(case.dtype, flush_to_zero=ftz)
    # roundings of S: q and k scaled (q·s, or both by sqrt(s)), S itself, S + bias; the
    # accumulation of its D products in any order, in float32 for every input below float64
    # (eps_dot D a: with one dominant product every later addition rounds at its size, so
    # float32 inputs with large logits are off by several eps a); then exp's own rounding
    roundings = 4 if bias is not None else 3
    eps_dot = eps if case.dtype == f64 else torch.finfo(torch.float32).eps
    r = (eps * (roundings * a + 1) + eps_dot * q.shape[-1] * a) * m
    pr, pi = _saturated(p, r, m)
    mf = m.to(f64)  # a weight that underflows is off by eta: those terms are counted in units of
    # eta and multiplied by it last (eta times a scale would itself round away in float64)
    rows = _terms(m.sum(-1, keepdim=True))  # (B, H, Lq, 1)
    cols = _terms(m.sum(-2).unsqueeze(-1))  # (B, H, Lk, 1)
    truth = {"out": out}
    # d out_i = sum_j P_ij r_ij (v_j - out_i): the weights' errors, then the sum and its rounding
    # The output counts each rounding at the unit roundoff u = eps / 2 (round to nearest) and
    # |S_ij| or |z_ij - m_i| where a single rounding of that value is meant (2.-3. of the
    # docstring): q and k scaled (u a0 each), S rounded (u |S|), S + bias (u |z|), z - m
    # (u |z - m|), the D products accumulated (u_dot D a0), exp (one ulp: 2u), all of which
    # normalization cancels in part; then the division and the weight's storage in T (2u each
    # weight, not cancelled), the output's rounding (u |out|) and the sum (u_acc n sum P |v|)
    u, u_dot, u_acc = eps / 2, eps_dot / 2, eps_acc / 2
    z_round = 0.0 if bias is None else s.abs()  # s already holds S + bias here
    s_plain = s if bias is None else s - bias
    r_out = (u * (2 * a0 + s_plain.abs() + z_round + (s - shift).abs() + 2) + u_dot * q.shape[-1] * a0) * m
    gap = (v.unsqueeze(-3) - out.unsqueeze(-2)).abs_()  # |v_j - out_i|, (B, H, Lq, Lk, Dv)
    # the weights' errors saturate: |out' - out| <= sum_j P_ij expm1(r_ij) |v_j - out_i| /
    # sum_k P_ik exp(-r_ik) (first order: sum_j P_ij r_ij |v_j - out_i|), and never beyond the
    # farthest allowed value (out' is a convex combination of them)
    moved = torch.einsum("bhij,bhije->bhie", _saturated(p, r_out, m)[0], gap)
    farthest = torch.where(m.unsqueeze(-1), gap, 0.0).amax(-2)
    spread_eta = torch.einsum("bhij,bhije->bhie", mf, gap) + rows + 2
    # the floor, term by term (Budget.parts): the weights' errors from rounded logits; the
    # division and the weights' storage (2u each weight: against v_j - out_i, and the part common
    # to the row, 2u |out_i|); the output's own rounding; the sums: P v (u_acc n sum_j P_ij |v_j|)
    # and the softmax's row sum, whose error scales every weight of the row alike and so the
    # output (u_acc n |out_i|); and near the subnormals
    parts = {
        "out": {
            "logits": torch.minimum(moved, farthest),
            "weights": torch.einsum("bhij,bhije->bhie", p * 2 * u, gap) + 2 * u * out.abs(),
            "rounding": u * out.abs(),
            "sums": u_acc * rows * (p @ v.abs() + out.abs()),
            "underflow": eta * spread_eta,
        }
    }
    rule = {"out": 2.0}
    reach: dict[str, torch.Tensor] = {}
    if grads:
        g64 = g.detach().to(device=cpu, dtype=f64)
        dp = g64 @ v.transpose(-2, -1)
        c = g64.abs() @ v.abs().transpose(-2, -1)  # |terms| of dP = g·v
        delta = (g64 * out).sum(-1, keepdim=True)
        ds = p * (dp - delta)
        # the scale last: a subnormal dS scaled first would round at eta and then be multiplied by |k|
        truth.update(dq=scale * (ds @ k), dk=scale * (ds.transpose(-2, -1) @ q), dv=p.transpose(-2, -1) @ g64)
        # Backward passes recompute the weights as exp(s - lse) from a stored logsumexp, whose
        # error does not cancel: its own rounding (eps_acc |lse|, |lse| <= max_j a_ij + log n),
        # that of the largest logit it was shifted by (eps_acc max_j a_ij), and the accumulation
        # order of S, which a backward that recomputes S may not share with the forward that
        # made the lse (2 eps_dot D max_j a_ij: off by that much even where one key takes all
        # the weight)
        a_max = torch.where(m, a, 0.0).amax(-1, keepdim=True)
        lse = a_max + torch.log(m.sum(-1, keepdim=True) + 1.0)
        pg = p * (eps_acc * (2 * lse + 2) + 2 * eps_dot * q.shape[-1] * a_max)
        # the row sum of n weights (any order) scales every weight of the row alike
        pg = pg + p * eps_acc * rows
        pi = pi + pg
        # dP_ij = g_i·v_j sums Dv terms; delta = sum_j P_ij dP_ij sums n of them (or Dv, as
        # g_i·out_i): the weights' errors (against dP - delta), dP's, and both accumulations
        dv_terms = float(v.shape[-1])
        dp_err = (eps + eps_acc * dv_terms) * c
        # (the weights' part never beyond the farthest allowed dP: delta averages them)
        spread_dp = (dp - delta).abs()
        by_weights = torch.minimum(
            (pr * spread_dp).sum(-1, keepdim=True),
            torch.where(m, spread_dp, 0.0).amax(-1, keepdim=True),
        )
        d_delta = by_weights + (pg * spread_dp).sum(-1, keepdim=True) + (p * dp_err).sum(-1, keepdim=True)
        d_delta = d_delta + eps_acc * rows * (p * dp.abs()).sum(-1, keepdim=True)
        d_delta = d_delta + (eps + eps_acc * dv_terms) * (g64.abs() * out.abs()).sum(-1, keepdim=True)
        # a backward that takes delta as g_i·out_i from the forward's output (flash-attention's)
        # also carries that output's sum of n terms: u_acc n sum_e |g_ie| sum_j P_ij |v_je|
        d_delta = d_delta + u_acc * rows * (p * c).sum(-1, keepdim=True)
        ads, sc = ds.abs(), abs(scale)
        # |error of dS_ij|, with the two roundings of dS = P (dP - delta) itself (the difference
        # and the product, each stored in T by a plain backward)
        # a kernel that differentiates through its shift m_i = max_j z_ij (not detached) adds
        # -sum_j dS_ij, zero in exact arithmetic, to dS at the row's largest logit: its
        # accumulation error, eps_acc n sum_j |dS_ij|
        top = m & (s == shift)
        # term by term (Budget.parts): the weights', dP's and delta's errors, and dS's own
        f = {
            "weights": pi * (dp - delta).abs(),
            "dP": p * dp_err,
            "delta": p * d_delta,
            "dS": 2 * eps * ads + top * eps_acc * rows * ads.sum(-1, keepdim=True),
        }
        # in units of eta: the underflowed weights against dP and delta (apart: a backward that
        # differentiates the normalization by the quotient rule multiplies each by them, and
        # underflowed roundings do not cancel), dS's own rounding (scaled or not: a kernel that
        # folds the scale into dS rounds s dS, and |k| multiplies that rounding without s),
        # through delta
        dpd = dp.abs() + delta.abs()
        folded = 1 / sc if sc else 0.0  # a zero scale leaves s dS = 0: nothing to round
        f_eta = mf * (dpd + 1 + folded) + p * (mf * dpd).sum(-1, keepdim=True)
        # in units of the accumulator's eta: a kernel that rescales its running sums by
        # exp(m_old - m_new) (online softmax) and differentiates through its running maximum
        # gets, at a key that was a running maximum (any key, for some chunking), the two
        # cancelling paths through a rescale factor that underflowed: off by eta_acc times the
        # weights (each at most 1 before rescaling) against dP and delta, the whole row at most
        acc = torch.float32 if case.dtype in (torch.float16, torch.bfloat16) else case.dtype
        eta_acc = underflow_unit(acc, flush_to_zero=ftz)
        f_acc = mf * (mf * dpd).sum(-1, keepdim=True)
        # partial sums in T: a kernel may add each block's (float32) sum into a T-valued gradient,
        # rounding it once per block of at least SMALLEST_TILE queries (dk, dv) or keys (dq):
        # torch's CPU flash-attention backward does, with blocks of 32 queries into dk and dv
        key_blocks, query_blocks = torch.ceil(rows / SMALLEST_TILE), torch.ceil(cols / SMALLEST_TILE)
        # the sizes of each gradient's terms, summed: its accumulation errors, and how large a
        # partial sum may grow (Budget.reach)
        reach.update(
            dq=sc * (ads @ k.abs()),
            dk=sc * (ads.transpose(-2, -1) @ q.abs()),
            dv=p.transpose(-2, -1) @ g64.abs(),
        )
        parts.update(
            dq={
                **{n: sc * t @ k.abs() for n, t in f.items()},
                "sums": (eps_acc * rows + u * key_blocks) * reach["dq"],
                "rounding": eps * truth["dq"].abs(),
                "underflow": eta * (sc * f_eta @ k.abs() + rows + 4) + eta_acc * (sc * f_acc @ k.abs()),
            },
            dk={
                **{n: sc * t.transpose(-2, -1) @ q.abs() for n, t in f.items()},
                "sums": (eps_acc * cols + u * query_blocks) * reach["dk"],
                "rounding": eps * truth["dk"].abs(),
                "underflow": eta * (sc * f_eta.transpose(-2, -1) @ q.abs() + cols + 4)
                + eta_acc * (sc * f_acc.transpose(-2, -1) @ q.abs()),
            },
            dv={
                "weights": pi.transpose(-2, -1) @ g64.abs(),
                "sums": (eps_acc * cols + u * query_blocks) * reach["dv"],
                "rounding": eps * truth["dv"].abs(),
                "underflow": eta * (mf.transpose(-2, -1) @ g64.abs() + cols + 4),
            },
        )
        rule.update(dq=3.0, dk=3.0, dv=3.0)
        if groups > 1:
            for n in ("dk", "dv"):
                b_, _, lk, d_ = truth[n].shape
                reach[n] = reach[n].reshape(b_, -1, groups, lk, d_).sum(2)
                truth[n] = truth[n].reshape(b_, -1, groups, lk, d_).sum(2)
                # one accumulation over the whole group's G * Lq terms: each per-head sum bound
                # (n_h eps sum|terms_h|) grows to at most G times itself
                parts[n] = {t: groups * x.reshape(b_, -1, groups, lk, d_).sum(2) for t, x in parts[n].items()}

    if case.dtype == f64:  # the truth is computed in float64 too: both sides may be off by the floor
        parts = {n: {t: 2 * x for t, x in terms.items()} for n, terms in parts.items()}
    floor = {n: functools.reduce(torch.add, terms.values()) for n, terms in parts.items()}

    # the plain same-dtype result, and its error per row (per key for dk, dv)
    device = "cpu" if case.device.type == "mps" else case.device
    leaves = [t.detach().to(device=device).requires_grad_(grads) for t in (case.q, case.k, case.v)]
    mask = None if case.mask is None and case.causal is None else case.full_mask.to(device)
    plain_bias = None if case.bias is None else case.bias.detach().to(device)
    plain_out = plain_attention(leaves[0], leaves[1], leaves[2], mask, scale, plain_bias)
    plain = {"out": plain_out}
    if grads:
        gp = torch.autograd.grad(plain_out, leaves, grad_outputs=g.to(device=device, dtype=case.dtype))
        plain.update(zip(("dq", "dk", "dv"), gp))
    plain_error = {n: _finite_or_zero(_error(plain[n], truth[n])).amax(-1, keepdim=True) for n in truth}
    return Budget(truth, plain_error, floor, rule, case.dtype, reach, parts=parts)


#: Rounding stages of an attention layer: input projections, logits, the weighted sum of values,
#: the output projection. Each rounds its results once in T.
LAYER_STAGES = 4

#: Samples of Monte Carlo arithmetic that measure a layer's plain error (:func:`layer_budget`).
LAYER_SAMPLES = 3

#: Roundings of T each input and result of a layer's operations is off by in those samples, at
#: most ``eps`` each: two, as a fused kernel stores a value and computes with it again (the
#: forward's output in a backward's ``sum_j P_ij dP_ij``), or computes it twice. (At one, with the
#: samples run on CUDA's float64 math path, ``nn.MultiheadAttention``'s float32 ``dx`` over a
#: one-key context, 0 exactly in float64, was off by 2.26e-8 on an H200 where three times the
#: largest sample allowed 1.98e-8; the samples now run on the CPU, and one rounding was not
#: tried there.)
LAYER_ROUNDINGS = 2


def layer_budget(
    call: Any,
    case: Any,
    terms: int,
    g: torch.Tensor | None = None,
    *,
    grads: bool = False,
    tf32: bool | None = None,
) -> Budget:
    """The budget of a layer case: the output ``y`` and, with ``grads``, the gradients of the
    cotangent ``g`` with respect to every float input (``dx``, ``dcontext``) and trainable
    parameter (``d(name)``). The layer's own float64 result is the truth; per batch element (per
    tensor for a parameter's gradient, a sum over the batch), with ``size = max|truth|``::

        allowed_y    = 2 * LAYER_STAGES * S + terms * eps * size
        allowed_grad = 3 * M + eps * size             (+ size near a kink)

    - ``S``: how far one rounding of every input to T moves the float64 output (measured: the
      inputs multiplied by ``1 ± eps``, random signs, seeded), once per stage of the layer; it
      carries the amplification of rounded logits by ``exp`` when the inputs are large.
    - ``M``: how far the float64 gradients move when every operation of the layer, forward and
      backward, has its inputs and results off by :data:`LAYER_ROUNDINGS` roundings in T,
      matrix products accumulated in float32 for half inputs (Monte Carlo arithmetic, on the
      CPU: :mod:`xattn_ref._perturbed`; the largest of :data:`LAYER_SAMPLES` seeded samples, as
      CADNA runs three): the error of a plain run in T, for a black box, times 3 (the rule of
      flash-attention's tests for gradients). It carries what ``S`` cannot: roundings inside the
      layer whose exact effect cancels (over a row with one allowed key ``dS = dP - dP = 0``
      exactly, whatever the inputs; a kernel that computes the two terms apart is off by
      ``eps |dP|``). Only gradients use it: the output's model is the one it had before.
    - ``terms * eps * size`` (``terms = E + E_ctx + Lk``, :meth:`LayerCall.budget`): the output's
      floor, the old layer model's, kept; ``eps * size`` for a gradient: its own rounding.
    - A kink (:data:`xattn_ref._perturbed.KINKS`: a ReLU, a clamp) that some value the layer's
      computation decides on lies near (:func:`xattn_ref._perturbed.near_kink`: within
      :data:`~xattn_ref._perturbed.KINK_MARGIN` times the largest deviation the samples show in
      that value, or one rounding of its size) admits ``size`` more in every gradient: a unit that
      a rounding switches on or off changes a gradient by a whole term (seen: a float16 decoder
      layer's ``d(linear1.weight)`` element 0.231 where float64 gives 0.454), which no bound of the
      rounding's size covers. There the gradients are checked for gross errors alone; a layer
      whose every unit is far from its kink (a ReLU layer in float32, mostly) is judged in full.

    ``eps`` is T's rounding unit; for float32 on a CUDA device whose matmuls run in TF32
    (:func:`matmul_eps`; ``tf32`` overrides it), TF32's, for every operation of the layer (its
    matrix products read their inputs rounded to TF32 and accumulate in float32)."""
    from xattn_ref._calls import forward_backward
    from xattn_ref._perturbed import near_kink, perturbed

    device = "cpu" if case.device.type == "mps" else str(case.device)
    exact = case.to(dtype=torch.float64, device=device)
    eps = _rounding_unit(case, tf32)
    gen = torch.Generator().manual_seed(case.seed + 4)
    nudged = exact.replace(
        **{
            n: t * (1 + eps * torch.randint(0, 2, t.shape, generator=gen).mul(2).sub(1).to(t))
            for n, t in exact.inputs().items()
        }
    )

    # in the call's own grad mode: under no_grad, layers such as nn.MultiheadAttention take another
    # (fast) path than the one being judged
    def results(c: Any) -> dict[str, torch.Tensor]:
        if grads and g is not None:
            y, d = forward_backward(call, c, g.detach().to(device=c.device, dtype=torch.float64))
            return {case.output_name: y, **d}
        return {case.output_name: call(c)}

    truth = results(exact)
    moved = call(nudged).detach().double().cpu()  # the output's S
    # The gradients' plain error: the largest over LAYER_SAMPLES samples of Monte Carlo arithmetic
    # (CADNA's three runs), each value off by up to LAYER_ROUNDINGS roundings in T, matrix
    # products accumulated in float32 for half inputs. The samples run on the CPU, where torch's
    # float64 attention is a fused kernel (flash attention for the CPU), as accelerators' kernels
    # are: it computes a backward's sum_j P_ij dP_ij from the forward's output, apart from dP, so
    # that rounding does not cancel where the true dS does (one allowed key). CUDA's float64
    # attention is the math path, whose softmax backward takes both from one dP and cancels it:
    # samples there fell short of float32 results on an H200.
    eps_acc = torch.finfo(torch.float32).eps if case.dtype != torch.float64 else eps
    on_cpu = exact if device == "cpu" else case.to(dtype=torch.float64, device="cpu")
    baseline = truth if device == "cpu" else results(on_cpu)
    samples, modes = [], []
    limit, r = torch.finfo(case.dtype).max, LAYER_ROUNDINGS
    for i in range(LAYER_SAMPLES if len(truth) > 1 else 0):
        with perturbed(r * eps, eps_acc=r * eps_acc, seed=case.seed + 5 + i, limit=limit) as mode:
            sample = results(on_cpu)
        samples.append({n: (sample[n] - baseline[n]).abs() for n in sample})
        modes.append(mode)
    # a unit of a piecewise-linear activation (ReLU) that a rounding switches on or off changes a
    # gradient by a whole term, which no bound of the rounding's size covers: where some value a
    # kink decides on lies near enough to it (within KINK_MARGIN times its largest deviation in
    # the samples, against the exact run's decisions, recorded under an unperturbed mode)
    kinked = False
    if any(m.kinks for m in modes):
        with perturbed(0.0, eps_acc=0.0, seed=0, limit=limit) as exact_mode:
            results(on_cpu)
        kinked = near_kink(exact_mode.decisions, [m.decisions for m in modes], r * eps)
    budget: dict[str, dict[str, torch.Tensor]] = {"truth": {}, "plain_error": {}, "floor": {}}
    rule: dict[str, float] = {}
    unbatched = frozenset(n for n in truth if n != case.output_name and n[1:] not in case.inputs())
    for name, t in truth.items():
        t = t.detach().double().cpu()
        is_output = name == case.output_name
        shape = (1,) * t.ndim if name in unbatched else (t.shape[0],) + (1,) * (t.ndim - 1)
        size = _row_max(t.nan_to_num(nan=0.0, posinf=0.0, neginf=0.0).abs(), shape[0])  # a NaN truth must
        if is_output:  # not make the budget vacuous
            s = _row_max(_finite_or_zero(_error(moved, t)), shape[0])
            plain_error, floor = LAYER_STAGES * s, terms * eps * size
        else:
            errors = [_row_max(_finite_or_zero(p[name].detach().double().cpu()), shape[0]) for p in samples]
            plain_error, floor = torch.stack(errors).amax(0), (1.0 + eps if kinked else eps) * size
        budget["truth"][name] = t
        budget["plain_error"][name] = plain_error.reshape(shape)
        budget["floor"][name] = (floor + torch.finfo(torch.float64).tiny).reshape(shape)
        rule[name] = 2.0 if is_output else 3.0
    return Budget(
        budget["truth"], budget["plain_error"], budget["floor"], rule, case.dtype, unbatched=unbatched
    )


def _row_max(t: torch.Tensor, rows: int) -> torch.Tensor:
    """The largest element of each of ``rows`` rows of ``t`` (0 for an empty row)."""
    flat = t.reshape(rows, -1)
    return flat.amax(-1) if flat.shape[-1] else flat.new_zeros(rows)


def _finite_or_zero(t: torch.Tensor) -> torch.Tensor:
    # A non-finite plain result would make the budget infinite and the check vacuous.
    return torch.where(t.isfinite(), t, 0.0)
