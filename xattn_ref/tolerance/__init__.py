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
:attr:`Budget.reach`), and there NaN too (partial sums that overflow to both infinities add up
to it: a group of heads' dk summed in T); anywhere else an infinity is an error. A plain result that is
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

Models (``fn(input_ids, attention_mask) -> logits``) are black boxes of many layers whose
inputs, token ids, are exact: their logits and parameter gradients are judged against three
times the error Monte Carlo arithmetic measures for every operation of the model
(:func:`model_budget`), over the real tokens only, with the same kink rule.

:class:`Budget` holds all of it for one case; :meth:`Budget.compare` is the one comparison
that every property of every kind of target goes through.
"""

from __future__ import annotations

from xattn_ref.tolerance.budget import (
    SMALLEST_TILE,
    TF32_EPS,
    Budget,
    Comparison,
    format_pair,
    matmul_eps,
    per_batch_max_error,
    underflow_unit,
)
from xattn_ref.tolerance.kernel import kernel_budget
from xattn_ref.tolerance.layer import (
    LAYER_ROUNDINGS,
    LAYER_SAMPLES,
    LAYER_STAGES,
    layer_budget,
)
from xattn_ref.tolerance.model import model_budget

__all__ = [
    "Budget",
    "Comparison",
    "LAYER_ROUNDINGS",
    "LAYER_SAMPLES",
    "LAYER_STAGES",
    "SMALLEST_TILE",
    "TF32_EPS",
    "format_pair",
    "kernel_budget",
    "layer_budget",
    "matmul_eps",
    "model_budget",
    "per_batch_max_error",
    "underflow_unit",
]
