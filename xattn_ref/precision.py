"""The precision a float64 run actually has, and the notices a run reports as information.

Libraries compute parts of a float64 run in float32 on purpose: Hugging Face's eager attention
takes its softmax in float32 (``softmax(dtype=torch.float32)``), its rotary tables are float32
(``inv_freq.float() @ positions.float()``), a grouped matmul may take no float64. Such a run is
float32-accurate there, and judging it at float64's rounding unit fails a correct model for
precision it never had. :func:`float64_precision` runs a computation once under a dispatch mode
that records every arithmetic operation on float32 tensors; where there are any, the float64
case is judged at float32's rounding unit, and the run reports it once as a notice (never a
failure).

Only float32 is admitted: float32 is the accumulator precision every fast kernel uses. An
operation in float16 or bfloat16 inside a float64 or float32 run is precision the user lost
(``known_bad.half_precision_model``), and stays judged at the run's own dtype.

Notices (:func:`notice`) are information a run collects while it checks (this one, and any a
later model adds), gathered per run by :func:`collected` and shown once per target in reports.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from xattn_ref._perturbed import ObservingMode, _leaves  # _leaves: an aten operation's arguments, in order

__all__ = [
    "FLOAT32",
    "NO_FLOAT64",
    "UNWATCHED",
    "LowerPrecision",
    "Notes",
    "collected",
    "float64_precision",
    "notice",
    "summarize",
]

#: Operations that move or cast values without arithmetic (a cast to float32 and back is exact
#: for the values float32 holds; the arithmetic that follows is what loses precision).
_MOVES = frozenset(
    {"_to_copy", "copy_", "copy", "clone", "detach", "lift_fresh", "empty_like", "zeros_like",
     "ones_like", "full_like", "_local_scalar_dense", "cat", "stack", "index", "index_select",
     "gather", "where", "masked_fill", "masked_fill_", "fill_", "zero_", "expand_copy", "eq", "ne",
     "isnan", "isinf", "isfinite", "_unsafe_view", "set_", "resize_", "new_empty", "new_zeros",
     "new_ones", "new_full", "select_backward", "slice_backward", "lt", "le", "gt", "ge", "max", "min",
     "amax", "amin", "argmax", "argmin"}
)  # fmt: skip


class LowerPrecision(ObservingMode):
    """Records, by name, the arithmetic operations that run on float32 tensors (:attr:`ops`)."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.ops: dict[str, None] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        schema = func._schema
        name = schema.name.split("::")[-1]
        if name == "_to_copy":  # a rounding where it casts float64 to float32
            source = args[0] if args else None
            if kwargs.get("dtype") == torch.float32 and getattr(source, "dtype", None) == torch.float64:
                self.ops["casts to float32"] = None
        elif (
            name not in _MOVES
            and name not in self.ops
            and not any(r.alias_info for r in schema.returns)
            and any(isinstance(t, torch.Tensor) and t.dtype == torch.float32 for t in _leaves((args, kwargs)))
        ):
            self.ops[name] = None
        return func(*args, **kwargs)


def float64_precision(run: Callable[[], Any], dtype: torch.dtype = torch.float64) -> tuple[Any, float]:
    """``run()``, the float64 computation of a case in ``dtype``, and the rounding unit a float64
    case is judged at: float64's, or float32's where some arithmetic ran on float32 tensors,
    which :func:`notice` reports. For a case in another dtype, ``run()`` and that dtype's unit
    (its budget is its own dtype's).

    A run that cannot be watched (FlexAttention's higher-order operator, which torch compiles
    even in eager mode, takes no dispatch mode of this kind) runs again unwatched and is judged
    at float64's unit, with a notice (:data:`UNWATCHED`); an error it raises then is its own.
    Where the failure came from a compiled region, torch's compilation caches are reset first
    (``torch._dynamo.reset()``): a compilation that failed under the mode fails every later call."""
    if dtype != torch.float64:
        return run(), torch.finfo(dtype).eps
    try:
        with LowerPrecision() as mode:
            result = run()
    except Exception as exc:  # the watch failed: the target's own error, if any, raises below
        if "torch._dynamo" in sys.modules and _compiled(exc):  # compile afresh, without the mode
            torch._dynamo.reset()
        result = run()
        why = str(exc).splitlines()[0].split(" and mode ")[0].split(" (on ")[0]  # no object reprs
        raised = "the target raised "  # a TargetError's words for the target's own exception
        why = why.removeprefix(raised) if why.startswith(raised) else f"{type(exc).__name__}: {why}"
        notice(UNWATCHED, why)
        return result, torch.finfo(torch.float64).eps
    for op in mode.ops:
        notice(FLOAT32, op)
    return result, torch.finfo(torch.float32 if mode.ops else torch.float64).eps


def _compiled(exc: BaseException) -> bool:
    """Whether ``exc`` came from a compiled region or a higher-order operator (whose failure
    under the mode stays in torch's compilation caches), by its words: a target's error arrives
    wrapped, its type in the message."""
    words = str(exc)
    from_dynamo = type(exc).__module__.startswith("torch._dynamo")
    return from_dynamo or "HigherOrderOperator" in words or "Dynamo" in words


#: the topics of notices: a float64 run that computes in float32 (items: the operations), a
#: target with no float64 run (item: why), a float64 run that could not be watched (item: why)
FLOAT32, NO_FLOAT64, UNWATCHED = "float32 in float64", "no float64", "unwatched"

Notes = tuple[tuple[str, str], ...]
_NOTICES: list[dict[tuple[str, str], None]] = []


def notice(topic: str, item: str) -> None:
    """Record ``item`` under ``topic`` for the run collecting (:func:`collected`); nothing
    outside one."""
    if _NOTICES:
        _NOTICES[-1][topic, item] = None


@contextlib.contextmanager
def collected() -> Iterator[dict[tuple[str, str], None]]:
    """The notices recorded inside the block, in order, once each."""
    found: dict[tuple[str, str], None] = {}
    _NOTICES.append(found)
    try:
        yield found
    finally:
        _NOTICES.pop()


def summarize(notes: Iterable[tuple[str, str]]) -> list[str]:
    """One line per topic, for a target's notices over all its runs."""
    topics: dict[str, dict[str, None]] = {}
    for topic, item in notes:
        topics.setdefault(topic, {})[item] = None
    lines = []
    if FLOAT32 in topics:
        ops = sorted(topics[FLOAT32])
        shown = ", ".join(ops[:8]) + (f" and {len(ops) - 8} more" if len(ops) > 8 else "")
        lines.append(
            f"its float64 run is float32-accurate here ({shown} run in float32, as the library computes "
            "them): those runs are judged at float32's rounding unit (information, not a failure)"
        )
    if NO_FLOAT64 in topics:
        why = next(iter(topics[NO_FLOAT64]))
        lines.append(f"it does not run in float64 ({why}): its float32 run is the base of its allowances")
    if UNWATCHED in topics:
        why = next(iter(topics[UNWATCHED]))
        lines.append(
            f"its float64 run could not be watched for float32 arithmetic ({why}): it is judged at "
            "float64's rounding unit"
        )
    return lines
