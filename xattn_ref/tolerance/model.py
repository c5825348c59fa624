"""The model budget (:func:`model_budget`): Monte Carlo arithmetic for the logits and the
parameters' gradients of a whole model, judged at real tokens. Derived in :mod:`xattn_ref.tolerance`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from xattn_ref._calls import first_nonfinite, forward_backward
from xattn_ref.errors import NotTaken, TargetError
from xattn_ref.precision import NO_FLOAT64, float64_precision, notice
from xattn_ref.tolerance.budget import Budget, _finite_or_zero, _rounding_unit, _row_max, underflow_unit
from xattn_ref.tolerance.layer import sampled_errors

if TYPE_CHECKING:
    from xattn_ref.cases import ModelCase


__all__ = ["model_budget"]


def model_budget(call: Any, case: ModelCase, g: torch.Tensor | None = None, *, grads: bool = False) -> Budget:
    """The budget of a model case: the logits and, with ``grads``, the gradients of the cotangent
    ``g`` with respect to every trainable parameter (``d(name)``). The model's own float64 result
    is the truth; per batch element for the logits (per tensor for a parameter's gradient), over
    the real tokens only (``case.judged()``: a padded position's logits are not compared, so they
    do not widen the budget), with ``size = max|truth|``::

        allowed = 3 * M + eps * size + n * eta           (+ size near a kink)

    ``M`` is the largest deviation of :data:`~xattn_ref.tolerance.layer.LAYER_SAMPLES` samples of
    Monte Carlo arithmetic (:func:`~xattn_ref.tolerance.layer.sampled_errors`): every operation of
    the model, forward and backward, with its inputs and results off by two roundings in T, its
    weights included. A model is a black box of many layers: the layer model's first-order output
    term (one rounding of the inputs, per stage) has no inputs to round here (token ids are
    exact), so the logits take the gradients' rule. ``eps * size``: the result's own rounding.
    ``eta``: T's subnormal spacing (:func:`~xattn_ref.tolerance.budget.underflow_unit`), the
    absolute error of a value rounded near zero, which Monte Carlo arithmetic's relative
    perturbations cannot show; ``n``: how many such roundings add up in the quantity, 1 for a
    logit, ``B * L`` for a parameter's gradient (a sum over every position, the encoder's too;
    seen: a float16 BART ``d(k_proj.bias)``, exactly 0 in float64, at -1.19e-7, two subnormal
    steps).
    Near a kink (a ReLU, as T5's feed-forward has) only gross errors are judged, as for a layer.
    Where the float64 logits at a real token are not finite (Hugging Face's eager attention in
    float64: ``finfo(float64).min`` in its float32 softmax is ``-inf``), the model's float32 run
    is the base that the samples perturb at T's roundings (the base's own error, float32's, is
    below what two roundings of T per operation make, or of its size for T = float32); where
    that is not finite either, no budget exists: :class:`NotTaken`, the example is left out. A
    model whose float64 run raises (a grouped matmul that takes no float64) takes its float32 run
    as the base likewise, and says so (:func:`~xattn_ref.precision.notice`). A float64 case whose
    run computes in float32 (Hugging Face's eager softmax and rotary tables) is judged at
    float32's rounding unit (:func:`~xattn_ref.precision.float64_precision`)."""
    device = "cpu" if case.device.type == "mps" else str(case.device)
    exact = case.to(dtype=torch.float64, device=device)
    eps = _rounding_unit(case, None)
    eta = underflow_unit(case.dtype, flush_to_zero=case.device.type != "cpu")

    def results(c: Any) -> dict[str, torch.Tensor]:
        if grads and g is not None:
            y, d = forward_backward(call, c, g.detach().to(device=c.device, dtype=c.dtype))
            return {case.output_name: y, **d}
        return {case.output_name: call(c).detach()}

    judged = case.judged().to("cpu").unsqueeze(-1)
    base = torch.float64
    truth: dict[str, torch.Tensor] | None = None
    try:  # a float64 run that computes in float32 is judged at float32's unit
        truth, unit = float64_precision(lambda: results(exact), case.dtype)
    except TargetError as exc:
        if case.dtype == torch.float64:
            raise
        # a model with no float64 path (a grouped matmul that takes no float64): its float32 run
        # is the base, as for a broken one below
        notice(NO_FLOAT64, str(exc).splitlines()[0].split(" (on ")[0])
    else:
        if unit > eps:
            eps, eta = unit, underflow_unit(torch.float32, flush_to_zero=case.device.type != "cpu")
    broken = truth is None or _broken(truth[case.output_name], judged) is not None
    if broken and case.dtype != torch.float64:
        # the model's float64 path is broken (Hugging Face's eager attention: finfo(float64).min
        # in a float32 softmax is -inf): its float32 run is the base, perturbed at T's roundings
        base, exact = torch.float32, case.to(dtype=torch.float32, device=device)
        truth = results(exact)
    assert truth is not None  # a float64 case whose run raised has raised above
    index = _broken(truth[case.output_name], judged)
    if index is not None:  # a NaN truth makes no budget: the case says nothing in this dtype
        raise NotTaken(
            f"its {str(base).removeprefix('torch.')} run gives {truth[case.output_name][index].item()} at "
            f"real token {index[:2]}, so no budget can be derived (--dtype float64 reports it)"
        )
    on_cpu = exact if device == "cpu" else case.to(dtype=base, device="cpu")
    baseline = truth if device == "cpu" else results(on_cpu)
    samples, kinked = sampled_errors(results, on_cpu, baseline, case, eps, base=base)
    positions = sum(t.numel() for t in (case.input_ids, case.decoder_input_ids) if t is not None)
    budget: dict[str, dict[str, torch.Tensor]] = {"truth": {}, "plain_error": {}, "floor": {}}
    unbatched = frozenset(n for n in truth if n != case.output_name)
    for name, t in truth.items():
        t = t.detach().double().cpu()
        keep = judged if name == case.output_name else torch.ones((), dtype=torch.bool)
        shape = (1,) * t.ndim if name in unbatched else (t.shape[0],) + (1,) * (t.ndim - 1)
        size = _row_max((t.nan_to_num(nan=0.0, posinf=0.0, neginf=0.0).abs() * keep), shape[0])
        errors = [
            _row_max(_finite_or_zero(p[name].detach().double().cpu()) * keep, shape[0]) for p in samples
        ]
        budget["truth"][name] = t
        budget["plain_error"][name] = torch.stack(errors).amax(0).reshape(shape)
        terms = 1 if name == case.output_name else positions
        floor = (1.0 + eps if kinked else eps) * size + terms * eta + torch.finfo(torch.float64).tiny
        budget["floor"][name] = floor.reshape(shape)
    rule = dict.fromkeys(truth, 3.0)
    return Budget(
        budget["truth"], budget["plain_error"], budget["floor"], rule, case.dtype, unbatched=unbatched
    )


def _broken(t: torch.Tensor, judged: torch.Tensor) -> tuple[int, ...] | None:
    """The first non-finite value of ``t`` at a judged position."""
    return first_nonfinite(torch.where(judged.to(t.device), t.detach(), 0.0))
