"""Run one property on one target for one dtype and device, with Hypothesis, and report it.

The property suite, the CLI and the pytest plugin all go through :func:`run_property`, so they
run the same checks with the same strategies and profiles.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from hypothesis import given
from hypothesis import seed as hypothesis_seed
from hypothesis import settings as Settings
from hypothesis.errors import FlakyFailure, FlakyReplay, HypothesisException

from xattn_ref._devices import dtype_name, unavailable_reason
from xattn_ref._spec import AttentionCase
from xattn_ref.checks import Property, PropertyFailure, TargetError

__all__ = ["Result", "Status", "properties_for", "run_property", "run_target"]

Status = Literal["passed", "failed", "skipped", "error"]


@dataclass
class Result:
    """The verdict of one property × dtype × device run."""

    property: str
    dtype: str
    device: str
    status: Status
    examples: int = 0
    applied: int = 0
    message: str = ""
    case: Any = field(default=None, repr=False)  # AttentionCase or LayerCase
    seed: int | None = None

    @builtins.property
    def ok(self) -> bool:
        return self.status in ("passed", "skipped")


def run_property(
    prop: Property | Any,
    target: Callable[..., Any],
    *,
    dtype: torch.dtype,
    device: str,
    strategy: Callable[[torch.dtype, str], Any],
    settings: Settings,
    seed: int | None = None,
    key: str = "",
) -> Result:
    """Run ``prop.check(target, case)`` over cases from ``strategy(dtype, device)``.

    Returns a :class:`Result`: ``skipped`` when the device or dtype is unavailable here (with
    the reason), ``failed`` with the minimal falsifying case and its message, ``error`` when the
    target cannot be tested, else ``passed``. ``key`` separates runs in Hypothesis's example
    database (use the target's name).
    """
    name = dtype_name(dtype)
    reason = unavailable_reason(device, dtype)
    if reason is not None:
        return Result(prop.name, name, device, "skipped", message=reason, seed=seed)

    counts = {"examples": 0, "applied": 0}
    last: list[BaseException] = []

    def check(case: AttentionCase) -> None:
        counts["examples"] += 1
        try:
            applied = prop.check(target, case)
        except (PropertyFailure, TargetError) as exc:
            last[:] = [exc]
            raise
        counts["applied"] += bool(applied)

    check._hypothesis_internal_add_digest = f"{key}:{prop.name}:{name}:{device}".encode()  # type: ignore[attr-defined]
    test: Callable[[], None] = settings(given(strategy(dtype, device))(check))  # type: ignore[no-untyped-call]
    if seed is not None:
        test = hypothesis_seed(seed)(test)
    result = Result(prop.name, name, device, "passed", seed=seed)
    try:
        test()
    except PropertyFailure as exc:
        result.status, result.message, result.case = "failed", exc.detail, exc.case
    except TargetError as exc:
        failing = last[0] if last else exc
        result.status, result.message = "error", str(failing)
    except (FlakyFailure, FlakyReplay) as exc:
        result.status = "failed"
        result.message = "the target gave different verdicts on the same input (non-deterministic): " + (
            str(last[0]).splitlines()[0] if last else str(exc).splitlines()[0]
        )
        if last and isinstance(last[0], PropertyFailure):
            result.case = last[0].case
    except HypothesisException as exc:
        result.status, result.message = "error", f"{type(exc).__name__}: {exc}".splitlines()[0]
    result.examples, result.applied = counts["examples"], counts["applied"]
    return result


def properties_for(kind: str) -> dict[str, Any]:
    """The properties that apply to a target kind: ``kernel`` or ``layer``."""
    if kind == "layer":
        from xattn_ref.layers import LAYER_PROPERTIES

        return dict(LAYER_PROPERTIES)
    from xattn_ref.checks import KERNEL_PROPERTIES

    return dict(KERNEL_PROPERTIES)


def run_target(
    target: Any,
    prop_name: str,
    *,
    dtype: torch.dtype,
    device: str,
    settings: Settings,
    seed: int | None = None,
) -> Result:
    """Run property ``prop_name`` on a :class:`xattn_ref.targets.Target` of either kind (a layer
    target holds a :class:`xattn_ref.layers.LayerTarget`, which knows its dims)."""
    prop = properties_for(target.kind)[prop_name]
    if target.kind == "layer":
        from xattn_ref.layers import LayerTarget, layer_cases

        if not isinstance(target.fn, LayerTarget):
            raise ValueError(
                "a layer Target must hold a LayerTarget: build it with xattn_ref.targets.as_layer"
            )
        e, e_ctx = target.fn.dim, target.fn.context_dim

        def strategy(dt: torch.dtype, dev: str) -> Any:
            return layer_cases(dim=e, context_dim=e_ctx, dtypes=(dt,), devices=(dev,))

    else:
        from xattn_ref.strategies import attention_cases

        def strategy(dt: torch.dtype, dev: str) -> Any:
            return attention_cases(dtypes=[dt], devices=[dev])

    return run_property(
        prop,
        target.fn,
        dtype=dtype,
        device=device,
        strategy=strategy,
        settings=settings,
        seed=seed,
        key=target.name,
    )
