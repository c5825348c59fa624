"""Tightness of the tolerance model: over default cases, per row (per key for dk and dv) of the
rows that carry signal (at least 1% of the quantity's largest row), the distribution of
``allowed / plain error`` (how much more than a plain same-dtype implementation's own error the
budget allows, where the plain result is not exact) and of ``allowed / max|truth|`` (the
allowance relative to the row), per dtype and logit scale, for the output and each gradient.
Each case weighs the same (its rows share its weight: a case of 774 rows would otherwise drown
a hundred small ones, and the median would say which large cases the sample happened to draw).
Without logit shifts and per-head scales, so that each line is one logit scale; seeded
(``--seed``), so the same command gives the same cases.

With ``--parts``: what the kernel allowance is made of, the median over the same rows of each
term of the floor (:attr:`xattn_ref.tolerance.Budget.parts`, its largest element in the row)
divided by the plain error. With the rule's share (2 for out, 3 for gradients) they add up to
at least the median allowance.

With ``--layers``: the layer model instead, on a correct cross-attention layer (SDPA, E = 16):
per batch element (per tensor for a parameter's gradient) of the default layer cases, ``allowed /
error`` of the same layer run in each dtype against its float64 run, for y, dx, dcontext and the
parameters' gradients together (``d(params)``), and ``allowed / max|truth|``.

    python scripts/tightness.py --cases 300
    python scripts/tightness.py --parts --cases 300
    python scripts/tightness.py --layers --cases 100
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from hypothesis import HealthCheck, given, seed, settings

from xattn_ref._calls import cotangent
from xattn_ref._kernel import plain_attention
from xattn_ref.strategies import attention_cases
from xattn_ref.tolerance import kernel_budget

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
STDS = (1.0, 10.0, 100.0)


def _seeded(cases: int, at: int) -> Callable[[Any], Any]:
    """``cases`` examples drawn from seed ``at``: the same ones every time (no database, no
    deadline), whatever the test function's source."""

    def wrap(test: Any) -> Any:
        quiet = list(HealthCheck)
        test = settings(max_examples=cases, database=None, deadline=None, suppress_health_check=quiet)(test)
        return seed(at)(test)

    return wrap


@dataclass
class Tally:
    """Values with weights: each case adds its rows, which share one unit of weight."""

    values: list[float] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)

    def add(self, values: torch.Tensor) -> None:
        if values.numel():
            self.values.extend(values.tolist())
            self.weights.extend([1.0 / values.numel()] * values.numel())

    def quantile(self, q: float) -> float:
        """The weighted ``q`` quantile (nan when empty)."""
        if not self.values:
            return float("nan")
        v, w = torch.tensor(self.values, dtype=torch.float64), torch.tensor(self.weights, dtype=torch.float64)
        order = v.argsort()
        cumulative = w[order].cumsum(0)
        at = int(torch.searchsorted(cumulative, q * cumulative[-1]).clamp(max=len(v) - 1))
        return float(v[order][at])


@dataclass
class Measured:
    """Per quantity: ``allowed / plain error``, ``allowed / max|truth|`` and, per term of the
    floor, ``term / plain error``."""

    ratio: dict[str, Tally] = field(default_factory=dict)
    relative: dict[str, Tally] = field(default_factory=dict)
    terms: dict[str, dict[str, Tally]] = field(default_factory=dict)

    def quantity(self, name: str) -> tuple[Tally, Tally]:
        return self.ratio.setdefault(name, Tally()), self.relative.setdefault(name, Tally())


def measure(dtype: torch.dtype, std: float, cases: int, at: int) -> Measured:
    measured = Measured()

    @_seeded(cases, at)
    @given(attention_cases(dtypes=[dtype], logit_stds=[std], logit_shifts=[0.0], head_scales=[1.0]))
    def one(case):  # type: ignore[no-untyped-def]
        g = cotangent(case, (*case.q.shape[:3], case.v.shape[-1]))
        budget = kernel_budget(case, g, grads=True)
        q, k, v = (t.detach().clone().requires_grad_(True) for t in (case.q, case.k, case.v))
        out = plain_attention(q, k, v, case.mask, case.q.shape[-1] ** -0.5)
        plain = dict(zip(("out", "dq", "dk", "dv"), (out, *torch.autograd.grad(out, (q, k, v), g))))
        for name, result in plain.items():
            truth = budget.truth[name]
            err = (result.detach().double() - truth).abs().amax(-1)  # per row (per key: dk, dv)
            allowed = budget.allowed(name).expand_as(truth).amax(-1)
            size = truth.abs().amax(-1)
            # rows that carry signal (at least 1% of the largest row: not saturated, not underflowed)
            signal = (size >= 1e-2 * size.max()) & (size > 0)
            rows = signal & (err > 1e-3 * torch.finfo(dtype).eps * size)  # where the plain is not exact
            ratio, relative = measured.quantity(name)
            ratio.add(allowed[rows] / err[rows])
            relative.add(allowed[signal] / size[signal])
            for term, part in budget.parts[name].items():
                share = part.expand_as(truth).amax(-1)[rows] / err[rows]
                measured.terms.setdefault(name, {}).setdefault(term, Tally()).add(share)

    one()
    return measured


def measure_layers(dtype: torch.dtype, cases: int, at: int) -> Measured:
    from xattn_ref._calls import forward_backward
    from xattn_ref.strategies import layer_cases
    from xattn_ref.targets import as_target
    from xattn_ref.zoo.adapters import cross_attention_layer

    call = as_target(cross_attention_layer(dim=16), kind="layer", dim=16).call
    measured = Measured()

    @_seeded(cases, at)
    @given(layer_cases(dim=16, dtypes=[dtype]))
    def one(case):  # type: ignore[no-untyped-def]
        g = cotangent(case, (*case.x.shape[:2], 16))
        budget = call.budget(case, g, grads=True)
        out, grads = forward_backward(call, case, g)
        for name, result in {"y": out, **grads}.items():
            truth = budget.truth[name]
            rows = truth.shape[0] if name not in budget.unbatched else 1
            err = (result.detach().double() - truth).abs().reshape(rows, -1).amax(-1)
            size = truth.abs().reshape(rows, -1).amax(-1)
            allowed = budget.allowed(name).expand_as(truth).reshape(rows, -1).amax(-1)
            signal = size > 0
            exact = err > 1e-3 * torch.finfo(dtype).eps * size
            ratio, relative = measured.quantity(name if name in ("y", "dx", "dcontext") else "d(params)")
            ratio.add(allowed[signal & exact] / err[signal & exact])
            relative.add(allowed[signal] / size[signal])

    one()
    return measured


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0, help="draws the cases (default 0)")
    parser.add_argument("--parts", action="store_true", help="each term of the kernel floor / plain error")
    parser.add_argument("--layers", action="store_true", help="the layer model, on a correct layer")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.layers:
        print("dtype     quantity   allowed/error: median      p1   allowed/|truth|: median")
        for dtype in DTYPES:
            measured = measure_layers(dtype, args.cases, args.seed)
            for name, ratio in measured.ratio.items():
                print(
                    f"{_name(dtype):9s} {name:10s} {ratio.quantile(0.5):10.3g} {ratio.quantile(0.01):10.3g}"
                    f"               {measured.relative[name].quantile(0.5):10.3g}",
                    flush=True,
                )
        return 0
    if args.parts:
        print("dtype     logit std  quantity  allowed/plain error: median | floor term / plain error: median")
    else:
        print("dtype     logit std  quantity  allowed/plain error: median    p99   allowed/|truth|: median")
    for dtype in DTYPES:
        for std in STDS:
            measured = measure(dtype, std, args.cases, args.seed)
            for name, ratio in measured.ratio.items():
                line = f"{_name(dtype):9s} {std:9g}  {name:8s}  {ratio.quantile(0.5):10.3g}"
                if args.parts:
                    terms = measured.terms[name].items()
                    line += " | " + "  ".join(f"{t} {tally.quantile(0.5):.3g}" for t, tally in terms)
                else:
                    relative = measured.relative[name].quantile(0.5)
                    line += f" {ratio.quantile(0.99):10.3g}               {relative:10.3g}"
                print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
