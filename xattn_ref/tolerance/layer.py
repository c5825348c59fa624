"""The layer model: a loose floor for the output and Monte Carlo arithmetic for the gradients
(:func:`layer_budget`). Derived in :mod:`xattn_ref.tolerance`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from xattn_ref._calls import forward_backward
from xattn_ref._perturbed import near_kink, perturbed
from xattn_ref.precision import float64_precision
from xattn_ref.tolerance.budget import Budget, _error, _finite_or_zero, _rounding_unit, _row_max

if TYPE_CHECKING:
    from xattn_ref.cases import Case


__all__ = [
    "LAYER_ROUNDINGS",
    "LAYER_SAMPLES",
    "LAYER_STAGES",
    "layer_budget",
    "sampled_errors",
]

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
    case: Case,
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
    device = "cpu" if case.device.type == "mps" else str(case.device)
    exact = case.to(dtype=torch.float64, device=device)
    eps = _rounding_unit(case, tf32)

    # in the call's own grad mode: under no_grad, layers such as nn.MultiheadAttention take another
    # (fast) path than the one being judged
    def results(c: Any) -> dict[str, torch.Tensor]:
        if grads and g is not None:
            y, d = forward_backward(call, c, g.detach().to(device=c.device, dtype=torch.float64))
            return {case.output_name: y, **d}
        return {case.output_name: call(c)}

    # a float64 run that computes in float32 is judged at float32's unit
    truth, unit = float64_precision(lambda: results(exact), case.dtype)
    eps = max(eps, unit)
    gen = torch.Generator().manual_seed(case.seed + 4)
    nudged = exact.replace(
        **{
            n: t * (1 + eps * torch.randint(0, 2, t.shape, generator=gen).mul(2).sub(1).to(t))
            for n, t in exact.inputs().items()
        }
    )
    moved = call(nudged).detach().double().cpu()  # the output's S
    # the gradients' plain error: Monte Carlo arithmetic (CADNA's three runs), on the CPU
    on_cpu = exact if device == "cpu" else case.to(dtype=torch.float64, device="cpu")
    baseline = truth if device == "cpu" else results(on_cpu)
    count = LAYER_SAMPLES if len(truth) > 1 else 0
    samples, kinked = sampled_errors(results, on_cpu, baseline, case, eps, count)
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


def sampled_errors(
    results: Callable[[Any], dict[str, torch.Tensor]],
    on_cpu: Any,
    baseline: dict[str, torch.Tensor],
    case: Case,
    eps: float,
    count: int = LAYER_SAMPLES,
    base: torch.dtype = torch.float64,
) -> tuple[list[dict[str, torch.Tensor]], bool]:
    """The plain error of a black box in ``case.dtype``: ``count`` samples of Monte Carlo
    arithmetic of ``results(on_cpu)`` (float64, on the CPU), each value off by up to
    :data:`LAYER_ROUNDINGS` roundings of ``eps``, matrix products accumulated in float32 for half
    inputs, as ``|sample - baseline|`` per quantity; and whether some value a kink decides on lies
    near it (:func:`xattn_ref._perturbed.near_kink`). ``base``: the dtype ``on_cpu`` runs in
    (float64, or float32 where the black box's float64 path is broken).

    The samples run on the CPU, where torch's float64 attention is a fused kernel (flash
    attention for the CPU), as accelerators' kernels are: it computes a backward's
    ``sum_j P_ij dP_ij`` from the forward's output, apart from dP, so that rounding does not cancel
    where the true dS does (one allowed key). CUDA's float64 attention is the math path, whose
    softmax backward takes both from one dP and cancels it: samples there fell short of float32
    results on an H200."""
    eps_acc = torch.finfo(torch.float32).eps if case.dtype != torch.float64 else eps
    samples, modes = [], []
    limit, r = torch.finfo(case.dtype).max, LAYER_ROUNDINGS
    if base != torch.float64:  # values near the base's own range are its sentinels (finfo.min in a
        limit = min(limit, torch.finfo(base).max / 4)  # mask, and logits added to it): exact
    for i in range(count):
        with perturbed(r * eps, eps_acc=r * eps_acc, seed=case.seed + 5 + i, limit=limit, base=base) as mode:
            sample = results(on_cpu)
        samples.append({n: (sample[n] - baseline[n]).abs() for n in sample})
        modes.append(mode)
    # a unit of a piecewise-linear activation (ReLU) that a rounding switches on or off changes a
    # result by a whole term, which no bound of the rounding's size covers: where some value a
    # kink decides on lies near enough to it (within KINK_MARGIN times its largest deviation in
    # the samples, against the exact run's decisions, recorded under an unperturbed mode)
    if not any(m.kinks for m in modes):
        return samples, False
    with perturbed(0.0, eps_acc=0.0, seed=0, limit=limit, base=base) as exact_mode:
        results(on_cpu)
    return samples, near_kink(exact_mode.decisions, [m.decisions for m in modes], r * eps)
