"""Layer targets: ``fn(x, context, context_mask) -> y`` (x-transformers' cross-attention call).

- ``x`` ``(B, Lq, E)``, ``context`` ``(B, Lk, E_ctx)``;
- ``context_mask`` ``(B, Lk)`` bool, **True = a real context token** (False = padding);
- ``y`` ``(B, Lq, E_out)``, or a tuple whose first element is it.

Layers have projections, so there is no reference to compare with: only reference-free
properties apply (``LAYER_PROPERTIES``). An ``nn.Module`` is copied to each dtype and device
and run in eval mode with gradients enabled.

Tolerance for layers. The layer's own float64 result on the same (exactly upcast) inputs and
parameters is the truth. A layer is a chain of sums no longer than ``n = E + E_ctx + Lk`` terms
(projections, then attention), and a sum of ``n`` terms rounded in T is off by at most about
``n * eps(T)`` times its magnitude, so::

    allowed = n * eps(T) * max|y_float64|          (dtype and device consistency)
    allowed = 2 * allowed                          (two results in T: padding, compaction, batch)

This bound is deliberately loose (a worst case, not the flash rule): it catches NaN, padding
that leaks into the output and outputs that depend on a fully padded context, not ulps.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from xattn_ref._calls import TargetError, check_output, index_str
from xattn_ref._devices import ALL_DTYPES, dtype_name
from xattn_ref._spec import MaskSpec
from xattn_ref._strategy_args import _check_choices, _check_int, _lazy
from xattn_ref.checks import PropertyFailure
from xattn_ref.strategies import _mask_specs

__all__ = [
    "LAYER_PROPERTIES",
    "LayerCase",
    "LayerCaseSpec",
    "LayerProperty",
    "LayerTarget",
    "layer_cases",
]


@dataclass(frozen=True)
class LayerCaseSpec:
    """Everything needed to rebuild one layer case (see :class:`xattn_ref.strategies.CaseSpec`)."""

    batch_size: int
    q_len: int
    kv_len: int
    dim: int
    context_dim: int
    dtype: torch.dtype
    device: str
    seed: int
    x_std: tuple[float, ...]
    context_std: tuple[float, ...]
    mask: MaskSpec

    def build(self) -> LayerCase:
        gen = torch.Generator().manual_seed(self.seed)
        b, f64 = self.batch_size, torch.float64
        x = torch.randn(b, self.q_len, self.dim, generator=gen, dtype=f64)
        ctx = torch.randn(b, self.kv_len, self.context_dim, generator=gen, dtype=f64)
        x = x * torch.tensor(self.x_std, dtype=f64).view(b, 1, 1)
        ctx = ctx * torch.tensor(self.context_std, dtype=f64).view(b, 1, 1)
        mask = self.mask.build(b, 1, 1, self.kv_len).reshape(b, self.kv_len)
        return LayerCase(
            x=x.to(self.dtype).to(self.device),
            context=ctx.to(self.dtype).to(self.device),
            context_mask=mask.to(self.device),
            spec=self,
        )

    def describe(self) -> str:
        return (
            f"B={self.batch_size} Lq={self.q_len} Lk={self.kv_len} E={self.dim} E_ctx={self.context_dim} "
            f"{dtype_name(self.dtype)} {self.device}; context_mask {self.mask.describe()}"
        ).replace("key_padding (B, 1, 1, Lk)", "(B, Lk), True = real token")


@dataclass(frozen=True, eq=False)
class LayerCase:
    """Inputs for one layer call; ``context_mask`` True = a real context token."""

    x: torch.Tensor
    context: torch.Tensor
    context_mask: torch.Tensor
    spec: LayerCaseSpec

    @property
    def dtype(self) -> torch.dtype:
        return self.x.dtype

    @property
    def device(self) -> torch.device:
        return self.x.device

    def to(self, *, dtype: torch.dtype | None = None, device: str | None = None) -> LayerCase:
        dtype = self.dtype if dtype is None else dtype
        device = str(self.device) if device is None else device
        return LayerCase(
            x=self.x.to(device=device, dtype=dtype),
            context=self.context.to(device=device, dtype=dtype),
            context_mask=self.context_mask.to(device),
            spec=dataclasses.replace(self.spec, dtype=dtype, device=device),
        )

    def describe(self) -> str:
        return self.spec.describe()

    def snippet(self) -> str:
        return (
            "import torch\n"
            "from xattn_ref.layers import LayerCaseSpec\n"
            "from xattn_ref.strategies import MaskSpec, SlicePattern\n"
            f"case = {self.spec!r}.build()\n"
            "x, context, context_mask = case.x, case.context, case.context_mask"
        )

    def __repr__(self) -> str:
        return f"LayerCase({self.describe()})"


def layer_cases(
    *,
    dim: int,
    context_dim: int | None = None,
    dtypes: tuple[torch.dtype, ...] = ALL_DTYPES,
    devices: tuple[str, ...] = ("cpu",),
    max_batch_size: int = 3,
    max_q_len: int = 5,
    max_kv_len: int = 64,
    stds: tuple[float, ...] = (1.0, 0.1, 10.0),
) -> st.SearchStrategy[LayerCase]:
    """Inputs for a layer ``fn(x, context, context_mask)``, as :class:`LayerCase`.

    - ``dim``: E, the last dim of x (required); ``context_dim``: E_ctx (default E).
    - ``dtypes``, ``devices``: drawn from.
    - ``max_batch_size``, ``max_q_len``, ``max_kv_len``: B, Lq, Lk are drawn from 1 to these.
    - ``stds``: standard deviations of x and context, drawn per batch element.

    ``context_mask`` is ``(B, Lk)`` bool, True = a real token, drawn per batch element from the
    key-padding patterns (a context that is entirely padding first, and often).

    Example::

        @given(layer_cases(dim=16, dtypes=(torch.float32,)))
        def test_my_layer(case):
            y = my_layer(case.x, case.context, case.context_mask)
            assert y.isfinite().all(), case.snippet()
    """

    def build() -> st.SearchStrategy[LayerCase]:
        e = _check_int("dim", dim, 1)
        ec = e if context_dim is None else _check_int("context_dim", context_dim, 1)
        dts = _check_choices("dtypes", dtypes, ALL_DTYPES)
        b_max = _check_int("max_batch_size", max_batch_size, 1)
        lq_max = _check_int("max_q_len", max_q_len, 1)
        lk_max = _check_int("max_kv_len", max_kv_len, 1)
        if not stds or any(not 0 < s < float("inf") for s in stds):
            raise InvalidArgument(f"stds must hold positive finite numbers, but was {stds!r}")
        patterns = ("all_false", "all_true", "one_key", "right_padding", "left_padding", "random")
        split = min(8, lk_max)

        @st.composite
        def draw(d: st.DrawFn) -> LayerCase:
            b = d(st.integers(1, b_max))
            lk = d(st.one_of(st.integers(1, split), st.integers(split, lk_max)))
            spec = LayerCaseSpec(
                batch_size=b,
                q_len=d(st.integers(1, lq_max)),
                kv_len=lk,
                dim=e,
                context_dim=ec,
                dtype=d(st.sampled_from(dts)),
                device=d(st.sampled_from(tuple(devices))),
                seed=d(st.integers(0, 2**32 - 1)),
                x_std=tuple(d(st.lists(st.sampled_from(stds), min_size=b, max_size=b))),
                context_std=tuple(d(st.lists(st.sampled_from(stds), min_size=b, max_size=b))),
                mask=d(_mask_specs(b, 1, 1, lk, ("key_padding",), patterns)),
            )
            return spec.build()

        return draw()

    return _lazy(build)


class LayerTarget:
    """Calls a layer callable or ``nn.Module`` on a :class:`LayerCase`; a module gets one copy per
    dtype and device, in eval mode."""

    def __init__(self, fn: Callable[..., Any], dim: int, context_dim: int) -> None:
        self.fn = fn
        self.dim = dim
        self.context_dim = context_dim
        self._copies: dict[tuple[torch.dtype, str], Callable[..., Any]] = {}

    def for_case(self, dtype: torch.dtype, device: torch.device | str) -> Callable[..., Any]:
        if not isinstance(self.fn, torch.nn.Module):
            return self.fn
        key = (dtype, str(device))
        if key not in self._copies:
            module = copy.deepcopy(self.fn).to(device=device, dtype=dtype).eval()
            self._copies[key] = module
        return self._copies[key]

    def parameters(self, dtype: torch.dtype, device: torch.device | str) -> list[torch.Tensor]:
        fn = self.for_case(dtype, device)
        return [p for p in fn.parameters() if p.requires_grad] if isinstance(fn, torch.nn.Module) else []

    def __call__(
        self,
        case: LayerCase,
        x: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = case.x if x is None else x
        context = case.context if context is None else context
        context_mask = case.context_mask if context_mask is None else context_mask
        fn = self.for_case(x.dtype, x.device)
        try:
            y = fn(x, context, context_mask)
        except Exception as exc:
            raise TargetError(
                f"the target raised {type(exc).__name__}: {exc} (on x {tuple(x.shape)}, context "
                f"{tuple(context.shape)}, context_mask {tuple(context_mask.shape)}, {x.dtype}, {x.device})"
            ) from exc
        if isinstance(y, tuple) and y:
            y = y[0]
        lead = tuple(x.shape[:2])
        return check_output(
            y,
            x,
            lambda t: t.ndim == 3 and tuple(t.shape[:2]) == lead,
            f"(B, Lq, E_out) with (B, Lq) = {lead} (or a tuple whose first element is one)",
        )


# --- properties -----------------------------------------------------------------------------


class LayerFailure(PropertyFailure):
    """A layer property does not hold; ``str()`` has the values and a reproduction."""


def _truth(target: LayerTarget, case: LayerCase) -> torch.Tensor:
    device = "cpu" if case.device.type == "mps" else str(case.device)
    with torch.no_grad():
        return target(case.to(dtype=torch.float64, device=device)).double().cpu()


def _allowed(target: LayerTarget, case: LayerCase, truth: torch.Tensor) -> float:
    n = target.dim + target.context_dim + case.context.shape[1]
    finite = truth[truth.isfinite()]  # a NaN truth must not make the budget NaN (vacuous)
    magnitude = float(finite.abs().max()) if finite.numel() else 0.0
    return n * torch.finfo(case.dtype).eps * magnitude + torch.finfo(torch.float64).tiny


def _compare(
    prop: str,
    case: LayerCase,
    what: str,
    a: torch.Tensor,
    b: torch.Tensor,
    allowed: float,
    rows: slice = slice(None),
) -> None:
    diff = (a.detach().double().cpu() - b.detach().double().cpu()).abs().nan_to_num(nan=float("inf"))
    if float(diff.max()) > allowed:
        flat = int(diff.reshape(-1).argmax())
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape))
        index = (index[0] + (rows.start or 0), *index[1:])
        raise LayerFailure(
            prop,
            case,
            f"{index_str('y', index)} = {a.reshape(-1)[flat].item():.6g} but {what} gives "
            f"{b.reshape(-1)[flat].item():.6g}: difference {diff.max().item():.3g} > allowed {allowed:.3g}",
        )


def _describe_context(case: LayerCase, b: int) -> str:
    n = int(case.context_mask[b].sum())
    return "is entirely padding" if n == 0 else f"has {n} real tokens of {case.context_mask.shape[1]}"


def finite_output(target: LayerTarget, case: LayerCase) -> bool:
    """Every element of y is finite, also for contexts that are entirely padding."""
    y = target(case)
    bad = ~y.isfinite()
    if bool(bad.any()):
        index = tuple(int(i) for i in bad.nonzero()[0])
        raise LayerFailure(
            "finite_output",
            case,
            f"{y[index].item()} in {index_str('y', index)}; "
            f"the context of batch element {index[0]} {_describe_context(case, index[0])}",
        )
    return True


def finite_grad(target: LayerTarget, case: LayerCase) -> bool:
    """Gradients with respect to x, context and every parameter are finite."""
    x = case.x.detach().clone().requires_grad_(True)
    ctx = case.context.detach().clone().requires_grad_(True)
    params = target.parameters(case.dtype, case.device)
    y = target(case, x, ctx)
    if not y.requires_grad:
        raise TargetError("the target's output does not require grad: it is not differentiable")
    gen = torch.Generator().manual_seed(case.spec.seed + 1)
    g = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(y)
    names = ["x", "context"] + [f"parameter {i}" for i in range(len(params))]
    module = target.for_case(case.dtype, case.device)
    if isinstance(module, torch.nn.Module):
        names = ["x", "context"] + [n for n, p in module.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(y, [x, ctx, *params], grad_outputs=g, allow_unused=True)
    for name, grad in zip(names, grads):
        if grad is not None and not bool(grad.isfinite().all()):
            index = tuple(int(i) for i in (~grad.isfinite()).nonzero()[0])
            raise LayerFailure(
                "finite_grad", case, f"{grad[index].item()} in the gradient of {name} at {list(index)}"
            )
    return True


def padding_invariance(target: LayerTarget, case: LayerCase) -> bool:
    """Any finite values at padded context positions leave y unchanged; in particular, when a
    batch element's whole context is padding, its output does not depend on the context at all."""
    pad = ~case.context_mask
    if not bool(pad.any()):
        return False
    truth = _truth(target, case)
    before = target(case)
    gen = torch.Generator().manual_seed(case.spec.seed + 2)
    top = min(1e4, torch.finfo(case.dtype).max ** 0.5 / 8)
    noise = (torch.randn(case.context.shape, generator=gen, dtype=torch.float64) * top).to(case.context)
    context = torch.where(pad.unsqueeze(-1), noise, case.context)
    after = target(case, context=context)
    for b in range(case.x.shape[0]):
        if bool(pad[b].any()):
            _compare(
                "padding_invariance",
                case,
                f"the call before replacing the padded context of batch element {b} "
                f"(which {_describe_context(case, b)}) with values up to {top:.3g}",
                after[b : b + 1],
                before[b : b + 1],
                2 * _allowed(target, case, truth),
                slice(b, b + 1),
            )
    return True


def compaction_equivalence(target: LayerTarget, case: LayerCase) -> bool:
    """Each batch element's y equals the layer on that element alone with its padding physically
    removed (context_mask all True); contexts with no real token are left to padding_invariance."""
    truth = _truth(target, case)
    y = target(case)
    tested = False
    for b in range(case.x.shape[0]):
        keep = case.context_mask[b].nonzero().squeeze(-1)
        if keep.numel() == 0:
            continue
        tested = True
        alone = target(
            case,
            case.x[b : b + 1],
            case.context[b : b + 1, keep],
            torch.ones(1, keep.numel(), dtype=torch.bool, device=case.device),
        )
        _compare(
            "compaction_equivalence",
            case,
            f"the layer on batch element {b} alone with its padding removed (keep = {keep.tolist()})",
            y[b : b + 1],
            alone,
            2 * _allowed(target, case, truth),
            slice(b, b + 1),
        )
    return tested


def batch_independence(target: LayerTarget, case: LayerCase) -> bool:
    """Changing one batch element (its inputs, or its context to all padding) leaves the others
    unchanged."""
    batch = case.x.shape[0]
    if batch < 2:
        return False
    b0 = batch - 1
    truth = _truth(target, case)
    before = target(case)
    gen = torch.Generator().manual_seed(case.spec.seed + 3)
    x, ctx = case.x.clone(), case.context.clone()
    x[b0] = (torch.randn(x[b0].shape, generator=gen, dtype=torch.float64) * 10).to(x)
    ctx[b0] = (torch.randn(ctx[b0].shape, generator=gen, dtype=torch.float64) * 10).to(ctx)
    mask = case.context_mask.clone()
    mask[b0] = False
    for change, after in (
        (f"batch element {b0} redrawn 10x larger", target(case, x, ctx)),
        (f"batch element {b0}'s context made all padding", target(case, context_mask=mask)),
    ):
        _compare(
            "batch_independence",
            case,
            f"the call before {change}",
            after[:b0],
            before[:b0],
            2 * _allowed(target, case, truth),
        )
    return True


def no_input_mutation(target: LayerTarget, case: LayerCase) -> bool:
    """x, context and context_mask are unchanged after the call."""
    x, ctx, mask = case.x.clone(), case.context.clone(), case.context_mask.clone()
    target(case, x, ctx, mask)
    for name, a, b in (
        ("x", case.x, x),
        ("context", case.context, ctx),
        ("context_mask", case.context_mask, mask),
    ):
        if not torch.equal(a, b):
            diff = (a != b).nonzero()[0]
            index = tuple(int(i) for i in diff)
            raise LayerFailure(
                "no_input_mutation",
                case,
                f"{name} was modified in place by the call, first at {index_str(name, index)}: "
                f"{a[index].item()} -> {b[index].item()}",
            )
    return True


def _consistency(prop: str, target: LayerTarget, case: LayerCase, baseline: LayerCase) -> None:
    with torch.no_grad():
        y = target(case)
        base = target(baseline)
    truth = base.double().cpu()
    _compare(
        prop,
        case,
        f"the same layer in {dtype_name(baseline.dtype)} on {baseline.device}",
        y,
        truth,
        _allowed(target, case, truth),
    )


def dtype_consistency(target: LayerTarget, case: LayerCase) -> bool:
    """y in a low-precision dtype agrees with the same layer in float64 (same device; CPU for MPS)."""
    if case.dtype == torch.float64:
        return False
    device = "cpu" if case.device.type == "mps" else str(case.device)
    _consistency("dtype_consistency", target, case, case.to(dtype=torch.float64, device=device))
    return True


def device_consistency(target: LayerTarget, case: LayerCase) -> bool:
    """y on an accelerator agrees with the same layer in float64 on the CPU."""
    if case.device.type == "cpu":
        return False
    _consistency("device_consistency", target, case, case.to(dtype=torch.float64, device="cpu"))
    return True


@dataclass(frozen=True)
class LayerProperty:
    """A named layer property and its check."""

    name: str
    check: Callable[[LayerTarget, LayerCase], bool]

    @property
    def summary(self) -> str:
        return " ".join((self.check.__doc__ or "").split("\n\n")[0].split())


LAYER_PROPERTIES: dict[str, LayerProperty] = {
    p.name: p
    for p in (
        LayerProperty("finite_output", finite_output),
        LayerProperty("finite_grad", finite_grad),
        LayerProperty("padding_invariance", padding_invariance),
        LayerProperty("compaction_equivalence", compaction_equivalence),
        LayerProperty("batch_independence", batch_independence),
        LayerProperty("no_input_mutation", no_input_mutation),
        LayerProperty("dtype_consistency", dtype_consistency),
        LayerProperty("device_consistency", device_consistency),
    )
}
