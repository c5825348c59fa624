"""What the strategies share: the default distributions, lazily validated strategies with a
readable repr, and argument checks that raise ``InvalidArgument`` naming the argument."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from hypothesis import strategies as st

__all__ = [
    "DEFAULT_HEAD_SCALES",
    "DEFAULT_LOGIT_SHIFTS",
    "SHIFT_CAPS",
    "DEFAULT_LOGIT_STDS",
    "DEFAULT_TILE_LENGTHS",
    "DEFAULT_VALUE_MEANS",
    "DEFAULT_VALUE_STDS",
    "HALF_SHIFT_CAP",
    "SINK_LOGITS",
    "SOFTCAPS",
]

#: Standard deviations of the logits ``q.k/sqrt(D)`` drawn per batch element. 100 puts the
#: largest logits of a row in the hundreds, where an unshifted ``exp`` overflows.
DEFAULT_LOGIT_STDS: tuple[float, ...] = (1.0, 0.01, 10.0, 100.0)
#: Standard deviations of ``v`` drawn per batch element.
DEFAULT_VALUE_STDS: tuple[float, ...] = (1.0, 1e-3, 1e3)
#: Shifts of every logit of a batch element (see ``CaseSpec``), drawn per batch element; 0 (no
#: shift) in half the draws and first, so shrinking removes the shift. -30 (a sixth) puts a row's
#: logits below -16, where ``finfo(float16).min + logit`` overflows to -inf; +30 puts them far
#: above 0, where an unshifted exp overflows in float16, and +1000 where it overflows in every
#: dtype; -1000 gives a very negative logsumexp (cuDNN's NaN dq, pytorch#196678), and -20000
#: logits under a -1e4 sentinel (where ``known_bad.sentinel_empty_rows``, flashinfer's bug,
#: zeroes valid rows); -1e12 reaches as deep as each dtype's logits keep digits to judge
#: (:data:`SHIFT_CAPS`: -1e5 in float32, -1e12 in float64), under any finite start of a running
#: maximum or sentinel a kernel may use (flashinfer#4267 started at -5e4:
#: ``known_bad.finite_initial_max``). In float16 and bfloat16 shifts are capped at
#: :data:`HALF_SHIFT_CAP`.
DEFAULT_LOGIT_SHIFTS: tuple[float, ...] = (
    *(0.0,) * 6, -30.0, -30.0, 30.0, -1000.0, -20000.0, 1000.0, -1e12,
)  # fmt: skip
#: The largest shift drawn in float16 and bfloat16 (either sign; larger ones are drawn as this).
#: Past -16 ``finfo(float16).min + logit`` overflows and past +11 an unshifted exp does, so 30
#: reaches both. Beyond it a half-precision logit keeps too few digits to judge: a logit z rounds
#: by up to ``eps |z| / 2``, which ``exp`` turns into a factor ``e^(eps |z| / 2)`` on its weight
#: (bfloat16 at -20000: ``e^78``): the budget then bounds each weight only by the whole row
#: (``tolerance.kernel._saturated``), so nothing but NaN and values outside the row could be told from
#: a correct result; and in float16 ``q.k`` before the scale (``shift * sqrt(D)``), the gradients
#: and their partial sums leave the range (65504). At 30 the factor is at most ``e^0.12``. Large
#: shifts (a logsumexp of -1000, logits under a -1e4 sentinel) are drawn in float32 and float64.
HALF_SHIFT_CAP = 30.0
#: The largest shift drawn in each dtype (either sign; larger ones are drawn as this): where a
#: logit keeps digits to judge (a logit z rounds by up to ``eps |z| / 2``: 0.006 at 1e5 in float32,
#: 1e-4 at 1e12 in float64), as :data:`HALF_SHIFT_CAP` is for half precision.
SHIFT_CAPS = {"float16": HALF_SHIFT_CAP, "bfloat16": HALF_SHIFT_CAP, "float32": 1e5, "float64": 1e12}
#: Means of ``v`` in units of its spread (its root mean square stays ``value_std``), drawn per
#: batch element; 0 first (and in three draws of five), so shrinking removes it. Far from zero
#: mean, ``out = P v`` is large next to the spread of v: an accumulator or a softmax
#: normalization in half precision shows there, while zero-mean values hide it under the
#: weights' own rounding.
DEFAULT_VALUE_MEANS: tuple[float, ...] = (0.0, 0.0, 0.0, 8.0, -8.0)
#: Factors of ``q`` drawn per query head: heads with logit scales 100 times apart in one case
#: (``[1.0]`` for alike heads). 1 first, so shrinking makes the heads alike.
DEFAULT_HEAD_SCALES: tuple[float, ...] = (1.0, 1.0, 0.1, 10.0)
#: Lengths at the tile boundaries of blocked kernels (tiles of 64, 128 and 256 keys or queries:
#: the last tile full, one short, one long), drawn for Lk in about one case of four and for Lq
#: in about one case of sixteen, within the length ranges (Lq up to 129 and Lk up to 257 by
#: default: long rows are where a sum accumulated in half precision drifts furthest).
DEFAULT_TILE_LENGTHS: tuple[int, ...] = (63, 64, 65, 127, 128, 129, 255, 256, 257)

#: Logit soft-caps drawn per case with ``softcap=True`` (``cap * tanh(s / cap)``): none first (so
#: shrinking removes it), Gemma 2's 50 and 30, then 5 and 1, under which most logits of a row
#: saturate toward ``±cap`` (and a cap applied after the mask turns padding's -inf into -cap).
SOFTCAPS: tuple[float | None, ...] = (None, 50.0, 30.0, 5.0, 1.0)
#: Sink logits drawn per query head with ``sinks=True`` (gpt-oss): 0 first; ±1 and ±5 next to
#: logits of standard deviation 1; 20, where the sink takes almost all of a row's weight.
SINK_LOGITS: tuple[float, ...] = (0.0, 1.0, -1.0, 5.0, -5.0, 20.0)


T = TypeVar("T")
P = ParamSpec("P")


class _Named(st.SearchStrategy[T]):  # type: ignore[misc]
    """A strategy built (and its arguments validated) when first used, whose repr is the call
    that made it (``attention_cases(dtypes=[torch.float16], causal=True)``)."""

    def __init__(self, build: Callable[[], st.SearchStrategy[T]], text: str) -> None:
        super().__init__()
        self._build, self._text = build, text
        self._inner: st.SearchStrategy[T] | None = None

    @property
    def wrapped(self) -> st.SearchStrategy[T]:
        if self._inner is None:
            self._inner = self._build()
        return self._inner

    def do_draw(self, data: Any) -> T:
        return data.draw(self.wrapped)  # type: ignore[no-any-return]

    def calc_is_empty(self, recur: Any) -> bool:
        return False

    def __repr__(self) -> str:
        return self._text


def lazy(fn: Callable[P, st.SearchStrategy[T]]) -> Callable[P, st.SearchStrategy[T]]:
    """Make the strategy function ``fn`` lazy, as Hypothesis makes its own: a call records its
    arguments, ``fn`` runs (validating them) when the strategy is first drawn from, and the
    strategy's repr is the call, arguments left at their defaults left out."""
    signature = inspect.signature(fn)
    defaults = {n: p.default for n, p in signature.parameters.items()}

    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> st.SearchStrategy[T]:
        bound = signature.bind(*args, **kwargs)  # a wrong keyword fails here, as for any call
        shown = [
            f"{key}={repr(list(value)) if isinstance(value, tuple) else repr(value)}"
            for key, value in bound.arguments.items()
            if not _same(value, defaults[key])
        ]
        return _Named(functools.partial(fn, *args, **kwargs), f"{fn.__name__}({', '.join(shown)})")

    return call


def _same(a: object, b: object) -> bool:
    try:
        return bool(a == b) and type(a) is type(b)
    except Exception:
        return False


# Plain functions that draw (no strategy is built per draw: building ``st.composite`` inside a
# draw makes Hypothesis re-read the source each time, which once cost two thirds of a run), and
# the same strategy object for the same arguments (a new one is validated again at every draw).
_ints = functools.lru_cache(maxsize=4096)(st.integers)
_choice = functools.lru_cache(maxsize=1024)(st.sampled_from)
