"""Tightness of the tolerance model: over default cases, per row (per key for dk and dv) of the
rows that carry signal (at least 1% of the quantity's largest row), the distribution of
``allowed / plain error`` (how much more than a plain same-dtype implementation's own error the
budget allows, where the plain result is not exact) and of ``allowed / max|truth|`` (the
allowance relative to the row), per dtype and logit scale, for the output and each gradient.
Without logit shifts and per-head scales, so that each line is one logit scale; derandomized, so
the same command gives the same cases.

With ``--layers``: the layer model instead, on a correct cross-attention layer (SDPA, E = 16):
per batch element (per tensor for a parameter's gradient) of the default layer cases, ``allowed /
error`` of the same layer run in each dtype against its float64 run, for y, dx, dcontext and the
parameters' gradients together (``d(params)``), and ``allowed / max|truth|``.

    python scripts/tightness.py --cases 300
    python scripts/tightness.py --layers --cases 100
"""

from __future__ import annotations

import argparse
import sys

import torch
from hypothesis import HealthCheck, given, settings

from xattn_ref._calls import cotangent
from xattn_ref._kernel import plain_attention
from xattn_ref.strategies import attention_cases
from xattn_ref.tolerance import kernel_budget

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
STDS = (1.0, 10.0, 100.0)


def _derandomized(cases: int) -> settings:
    """``cases`` examples, the same ones every time (no database, no deadline)."""
    return settings(
        max_examples=cases,
        database=None,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )


def measure(dtype: torch.dtype, std: float, cases: int) -> dict[str, tuple[list[float], list[float]]]:
    ratios: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in ("out", "dq", "dk", "dv")}

    @_derandomized(cases)
    @given(attention_cases(dtypes=[dtype], logit_stds=[std], logit_shifts=[0.0], head_scales=[1.0]))
    def one(case):  # type: ignore[no-untyped-def]
        g = cotangent(case, (*case.q.shape[:3], case.v.shape[-1]))
        budget = kernel_budget(case, g, grads=True)
        q, k, v = (t.detach().clone().requires_grad_(True) for t in (case.q, case.k, case.v))
        out = plain_attention(q, k, v, case.mask, case.q.shape[-1] ** -0.5)
        plain = dict(zip(("out", "dq", "dk", "dv"), (out, *torch.autograd.grad(out, (q, k, v), g))))
        for name in ratios:
            truth = budget.truth[name]
            err = (plain[name].detach().double() - truth).abs().amax(-1)  # per row (per key: dk, dv)
            allowed = budget.allowed(name).expand_as(truth).amax(-1)
            size = truth.abs().amax(-1)
            # rows that carry signal (at least 1% of the largest row: not saturated, not underflowed)
            signal = (size >= 1e-2 * size.max()) & (size > 0)
            rows = signal & (err > 1e-3 * torch.finfo(dtype).eps * size)  # where the plain is not exact
            ratios[name][0].extend((allowed[rows] / err[rows]).tolist())
            ratios[name][1].extend((allowed[signal] / size[signal]).tolist())

    one()
    return ratios


def measure_layers(dtype: torch.dtype, cases: int) -> dict[str, tuple[list[float], list[float]]]:
    from xattn_ref._calls import forward_backward
    from xattn_ref.adapters import cross_attention_layer
    from xattn_ref.strategies import layer_cases
    from xattn_ref.targets import as_target

    call = as_target(cross_attention_layer(dim=16), kind="layer", dim=16).call
    ratios: dict[str, tuple[list[float], list[float]]] = {
        n: ([], []) for n in ("y", "dx", "dcontext", "d(params)")
    }

    @_derandomized(cases)
    @given(layer_cases(dim=16, dtypes=[dtype]))
    def one(case):  # type: ignore[no-untyped-def]
        g = cotangent(case, (*case.x.shape[:2], 16))
        budget = call.budget(case, g, grads=True)
        out, grads = forward_backward(call, case, g)
        for name, result in {"y": out, **grads}.items():
            key = name if name in ratios else "d(params)"
            truth = budget.truth[name]
            rows = truth.shape[0] if name not in budget.unbatched else 1
            err = (result.detach().double() - truth).abs().reshape(rows, -1).amax(-1)
            size = truth.abs().reshape(rows, -1).amax(-1)
            allowed = budget.allowed(name).expand_as(truth).reshape(rows, -1).amax(-1)
            signal = size > 0
            exact = err > 1e-3 * torch.finfo(dtype).eps * size
            ratios[key][0].extend((allowed[signal & exact] / err[signal & exact]).tolist())
            ratios[key][1].extend((allowed[signal] / size[signal]).tolist())

    one()
    return ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--layers", action="store_true", help="the layer model, on a correct layer")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.layers:
        print("dtype     quantity   allowed/error: median      p1   allowed/|truth|: median")
        for dtype in DTYPES:
            for name, (r, m) in measure_layers(dtype, args.cases).items():
                rt, mt = torch.tensor(r or [float("nan")]), torch.tensor(m or [float("nan")])
                print(
                    f"{str(dtype).removeprefix('torch.'):9s} {name:10s} {rt.nanmedian():10.3g} "
                    f"{rt.nanquantile(0.01):10.3g}               {mt.nanmedian():10.3g}",
                    flush=True,
                )
        return 0
    print("dtype     logit std  quantity  allowed/plain error: median    p99   allowed/|truth|: median")
    for dtype in DTYPES:
        for std in STDS:
            for name, (r, m) in measure(dtype, std, args.cases).items():
                rt, mt = torch.tensor(r or [float("nan")]), torch.tensor(m or [float("nan")])
                print(
                    f"{str(dtype).removeprefix('torch.'):9s} {std:9g}  {name:8s}  "
                    f"{rt.nanmedian():10.3g} {rt.nanquantile(0.99):10.3g}"
                    f"               {mt.nanmedian():10.3g}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
