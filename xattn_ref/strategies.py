"""Hypothesis strategies for attention inputs and masks: kernel cases, layer cases, masks.

Mask convention everywhere here: a bool mask, **True = may attend** (as in
``torch.nn.functional.scaled_dot_product_attention``).

Use them in your own tests::

    from hypothesis import given
    from xattn_ref.strategies import attention_cases

    @given(attention_cases(dtypes=[torch.float32]))
    def test_my_attention_is_finite(case):
        out = my_attention(case.q, case.k, case.v, case.mask)
        assert out.isfinite().all(), case.snippet()

Tensors are never drawn element by element: Hypothesis draws shapes, mask patterns, lengths,
scales and a seed, and the tensors are built from them with torch's generator. This keeps
examples fast at any size and makes every example reproducible from ``repr(case.spec)``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from xattn_ref._args import check_choices as _check_choices
from xattn_ref._args import check_int as _check_int
from xattn_ref._args import check_range as _check_range
from xattn_ref._devices import ALL_DTYPES
from xattn_ref.cases import (
    ALL_MASK_LAYOUTS,
    BIAS_KINDS,
    CAUSAL_ALIGNMENTS,
    MASK_LAYOUTS,
    MASK_PATTERNS,
    AttentionCase,
    BiasSpec,
    CaseSpec,
    EncoderCase,
    EncoderCaseSpec,
    LayerCase,
    LayerCaseSpec,
    MaskSpec,
    SlicePattern,
)

__all__ = [
    "DEFAULT_HEAD_SCALES",
    "DEFAULT_LOGIT_SHIFTS",
    "DEFAULT_LOGIT_STDS",
    "DEFAULT_TILE_LENGTHS",
    "DEFAULT_VALUE_MEANS",
    "DEFAULT_VALUE_STDS",
    "HALF_SHIFT_CAP",
    "attention_cases",
    "encoder_cases",
    "layer_cases",
    "mask_specs",
    "masks",
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
#: zeroes valid rows). In float16 and bfloat16 shifts are capped at :data:`HALF_SHIFT_CAP`.
DEFAULT_LOGIT_SHIFTS: tuple[float, ...] = (*(0.0,) * 6, -30.0, -30.0, 30.0, -1000.0, -20000.0, 1000.0)
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


T = TypeVar("T")


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


def _call_repr(name: str, arguments: dict[str, Any], fn: Callable[..., Any]) -> str:
    defaults = {n: p.default for n, p in inspect.signature(fn).parameters.items()}
    shown = []
    for key, value in arguments.items():
        if key in defaults and _same(value, defaults[key]):
            continue
        text = repr(list(value)) if isinstance(value, tuple) else repr(value)
        shown.append(f"{key}={text}")
    return f"{name}({', '.join(shown)})"


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


@dataclass(frozen=True)
class _Length:
    """Lengths in ``[low, high]``, drawn in the proportions ``weights``: up to ``short`` (first, so
    shrinking goes there), anywhere in the range, and one of ``tiles`` within the range."""

    low: int
    high: int
    short: int
    tiles: tuple[int, ...] = ()
    weights: tuple[int, int, int] = (1, 1, 0)

    def draw(self, draw: st.DrawFn) -> int:
        tiles = tuple(t for t in self.tiles if self.low <= t <= self.high)
        near, anywhere, tile = self.weights
        branch = draw(_choice(tuple(range(near + anywhere + (tile if tiles else 0)))))
        if branch >= near + anywhere:
            return int(draw(_choice(tiles)))
        if branch >= near:
            return draw(_ints(self.low, self.high))
        return draw(_ints(self.low, max(self.low, min(self.short, self.high))))


def _draw_slice(draw: st.DrawFn, patterns: tuple[str, ...], q_len: int, kv_len: int) -> SlicePattern:
    name = draw(_choice(patterns))
    if name in ("all_false", "all_true", "causal"):
        return SlicePattern(name)
    if name == "one_key":
        return SlicePattern(name, arg=draw(_ints(0, kv_len - 1)))
    if name in ("right_padding", "left_padding"):
        return SlicePattern(name, arg=draw(_ints(0, kv_len)))
    return SlicePattern(
        name,
        arg=draw(_ints(1, 7)),
        seed=draw(_ints(0, 2**16)),
        empty_rows=draw(_ints(0, q_len)),
    )


def _draw_mask(
    draw: st.DrawFn,
    layout: str,
    batch_size: int,
    num_heads: int,
    q_len: int,
    kv_len: int,
    patterns: tuple[str, ...],
) -> MaskSpec:
    per_batch = {
        "key_padding": batch_size,
        "query_key": batch_size,
        "shared": 1,
        "sequence_padding": batch_size,
    }
    count = per_batch.get(layout, batch_size * num_heads)
    rows = 1 if layout in ("key_padding", "sequence_padding") else q_len
    return MaskSpec(layout, tuple(_draw_slice(draw, patterns, rows, kv_len) for _ in range(count)))


@st.composite
def _mask_specs(
    draw: st.DrawFn,
    batch_size: int,
    num_heads: int,
    q_len: int,
    kv_len: int,
    layouts: tuple[str, ...],
    patterns: tuple[str, ...],
) -> MaskSpec:
    layout = draw(st.sampled_from(layouts))
    return _draw_mask(draw, layout, batch_size, num_heads, q_len, kv_len, patterns)


def mask_specs(
    *,
    batch_size: int = 2,
    num_heads: int = 2,
    q_len: int = 3,
    kv_len: int = 4,
    layouts: Sequence[str] = MASK_LAYOUTS,
    patterns: Sequence[str] = MASK_PATTERNS,
) -> st.SearchStrategy[MaskSpec]:
    """Like :func:`masks`, but draws the printable :class:`MaskSpec` (``.build(B, H, Lq, Lk)``)."""

    def build() -> st.SearchStrategy[MaskSpec]:
        b = _check_int("batch_size", batch_size, 1)
        h = _check_int("num_heads", num_heads, 1)
        lq = _check_int("q_len", q_len, 1)
        lk = _check_int("kv_len", kv_len, 1)
        lay = _check_choices("layouts", layouts, MASK_LAYOUTS)
        pat = _check_choices("patterns", patterns, MASK_PATTERNS)
        return _mask_specs(b, h, lq, lk, lay, pat)

    arguments = dict(
        batch_size=batch_size,
        num_heads=num_heads,
        q_len=q_len,
        kv_len=kv_len,
        layouts=layouts,
        patterns=patterns,
    )
    return _Named(build, _call_repr("mask_specs", arguments, mask_specs))


def masks(
    *,
    batch_size: int = 2,
    num_heads: int = 2,
    q_len: int = 3,
    kv_len: int = 4,
    layouts: Sequence[str] = MASK_LAYOUTS,
    patterns: Sequence[str] = MASK_PATTERNS,
    device: str = "cpu",
) -> st.SearchStrategy[torch.Tensor]:
    """Bool attention masks, **True = may attend**, broadcastable to ``(B, H, Lq, Lk)``.

    - ``batch_size``, ``num_heads``, ``q_len``, ``kv_len``: B, H, Lq, Lk (each at least 1).
    - ``layouts``: shapes to draw from: ``key_padding`` ``(B, 1, 1, Lk)``, ``query_key``
      ``(B, 1, Lq, Lk)``, ``full`` ``(B, H, Lq, Lk)``, ``shared`` ``(Lq, Lk)``.
    - ``patterns``: patterns of each slice, from :data:`MASK_PATTERNS`: ``all_false`` (the
      whole context is padding), ``all_true``, ``one_key``, ``right_padding``,
      ``left_padding``, ``causal`` (bottom-right aligned: empty rows when Lq > Lk),
      ``random`` (with some rows cleared).
    - ``device``: where the masks are made.

    Example::

        @given(masks(batch_size=2, kv_len=5, layouts=["key_padding"]))
        def test_padding(mask):
            assert mask.shape == (2, 1, 1, 5)

    Each slice draws its pattern independently, so batch elements whose whole context is
    padding and rows with no allowed key are common; ``all_false`` is the simplest pattern, so
    shrinking leads to them.
    """
    specs = mask_specs(
        batch_size=batch_size,
        num_heads=num_heads,
        q_len=q_len,
        kv_len=kv_len,
        layouts=layouts,
        patterns=patterns,
    )
    if not isinstance(device, str):
        raise InvalidArgument(f"device must be a str such as 'cpu', but was {device!r}")
    arguments = dict(
        batch_size=batch_size, num_heads=num_heads, q_len=q_len, kv_len=kv_len, layouts=layouts,
        patterns=patterns, device=device,
    )  # fmt: skip
    built = specs.map(lambda spec: spec.build(batch_size, num_heads, q_len, kv_len).to(device))
    return _Named(lambda: built, _call_repr("masks", arguments, masks))


def attention_cases(
    *,
    dtypes: Sequence[torch.dtype] = ALL_DTYPES,
    devices: Sequence[str] = ("cpu",),
    max_batch_size: int = 3,
    max_num_heads: int = 2,
    min_q_len: int = 1,
    max_q_len: int = 129,
    min_kv_len: int = 1,
    max_kv_len: int = 257,
    head_dims: Sequence[int] = (8, 1, 16, 64),
    mask_layouts: Sequence[str] = MASK_LAYOUTS,
    mask_patterns: Sequence[str] = MASK_PATTERNS,
    allow_no_mask: bool = True,
    logit_stds: Sequence[float] = DEFAULT_LOGIT_STDS,
    value_stds: Sequence[float] = DEFAULT_VALUE_STDS,
    logit_shifts: Sequence[float] = DEFAULT_LOGIT_SHIFTS,
    value_means: Sequence[float] = DEFAULT_VALUE_MEANS,
    head_scales: Sequence[float] = DEFAULT_HEAD_SCALES,
    tile_lengths: Sequence[int] = DEFAULT_TILE_LENGTHS,
    batch_size: Size = None,
    num_heads: Size = None,
    num_kv_heads: Size = None,
    gqa: bool = False,
    q_len: Size = None,
    kv_len: Size = None,
    head_dim: Size = None,
    dtype: torch.dtype | st.SearchStrategy[torch.dtype] | None = None,
    scale: float | st.SearchStrategy[float] | None = None,
    bias: bool = False,
    causal: bool | str = False,
    self_attention: bool = False,
    allow_mask: bool = True,
) -> st.SearchStrategy[AttentionCase]:
    """Inputs for ``attention(q, k, v, mask)`` in SDPA's layout, as :class:`AttentionCase`.

    - ``dtypes``: dtypes to draw from (default float64, float32, float16, bfloat16).
    - ``devices``: devices to draw from, e.g. ``["cpu", "cuda"]`` (default CPU only).
    - ``max_batch_size``, ``max_num_heads``: B and H are drawn from 1 to these.
    - ``min_q_len``, ``max_q_len``: range of Lq (default 1 to 129: about seven cases in eight
      have Lq <= 6, the others are anywhere in the range or at a tile boundary).
    - ``min_kv_len``, ``max_kv_len``: range of Lk (default 1 to 257: half the examples use
      Lk <= 8, a quarter reach the long contexts that size-dispatched kernels use, a quarter sit
      at a tile boundary).
    - ``head_dims``: head dims D and value dims Dv to draw from (independently).
    - ``mask_layouts``, ``mask_patterns``: as for :func:`masks`; the mask is bool,
      **True = may attend**.
    - ``allow_no_mask``: whether ``mask=None`` is drawn (one case in eight).
    - ``logit_stds``: standard deviations of ``q.k/sqrt(D)``, drawn per batch element.
    - ``value_stds``: standard deviations of ``v``, drawn per batch element.
    - ``logit_shifts``: shifts of all the logits of a batch element, drawn per batch element
      (``[0.0]`` for none): rows whose allowed logits are all very negative or far above 0; in
      float16 and bfloat16 within ``±HALF_SHIFT_CAP`` (30).
    - ``value_means``: means of ``v`` in units of its spread, drawn per batch element (``[0.0]``
      for zero-mean values; its root mean square stays the drawn ``value_stds``).
    - ``head_scales``: factors of ``q`` drawn per query head (``[1.0]`` for alike heads).
    - ``tile_lengths``: lengths drawn for Lq and Lk in a share of the cases (those within the
      ranges; ``[]`` for none): tile boundaries of blocked kernels.
    - ``batch_size``, ``num_heads``, ``q_len``, ``kv_len``, ``head_dim``: an int or a strategy of
      ints, to fix or draw B, H, Lq, Lk, D (and Dv = D) yourself; None (default) draws them
      from the ranges above.
    - ``dtype``: a dtype or a strategy of dtypes, instead of drawing from ``dtypes``.
    - ``num_kv_heads``: H_kv, an int or a strategy of ints dividing H (grouped-query attention:
      k and v get H_kv heads); None (default) is H, unless ``gqa``.
    - ``gqa``: draw H_kv among the divisors of H (H first, so shrinking ends at equal heads).
    - ``scale``: a number or a strategy of numbers: the scale the kernel is called with
      (``case.scale``); None (default) is ``D ** -0.5`` and the kernel is not told.
    - ``bias``: draw finite additive biases on the logits (ALiBi, random) in three cases of four.
    - ``causal``: ``"top_left"`` (SDPA's ``is_causal``; also ``True``) or ``"bottom_right"``:
      every case is causal with that alignment, combined with a key-padding mask (or none;
      other layouts only if ``mask_layouts`` leaves out ``key_padding``).
    - ``self_attention``: Lq == Lk.
    - ``allow_mask``: False draws ``mask=None`` only (a kernel that takes no mask).

    Example::

        @given(attention_cases(dtypes=[torch.float16], num_kv_heads=1, causal="top_left"))
        def test_finite(case):
            out = my_attention(case.q, case.k, case.v, case.mask, is_causal=True)
            assert out.isfinite().all(), case.snippet()

    Shrinking goes to one batch element, one head, the shortest lengths, float64 (the first
    dtype), a ``key_padding`` mask and the ``all_false`` pattern, no bias, the first scale.
    """
    arguments = dict(
        dtypes=dtypes, devices=devices, max_batch_size=max_batch_size, max_num_heads=max_num_heads,
        min_q_len=min_q_len, max_q_len=max_q_len, min_kv_len=min_kv_len, max_kv_len=max_kv_len,
        head_dims=head_dims, mask_layouts=mask_layouts, mask_patterns=mask_patterns,
        allow_no_mask=allow_no_mask, logit_stds=logit_stds, value_stds=value_stds,
        logit_shifts=logit_shifts, value_means=value_means, head_scales=head_scales,
        tile_lengths=tile_lengths, batch_size=batch_size, num_heads=num_heads, num_kv_heads=num_kv_heads,
        gqa=gqa, q_len=q_len, kv_len=kv_len, head_dim=head_dim, dtype=dtype, scale=scale, bias=bias,
        causal=causal, self_attention=self_attention, allow_mask=allow_mask,
    )  # fmt: skip

    def build() -> st.SearchStrategy[AttentionCase]:
        dts = _check_choices("dtypes", dtypes, ALL_DTYPES)
        devs = _check_devices(devices)
        b_max = _check_int("max_batch_size", max_batch_size, 1)
        h_max = _check_int("max_num_heads", max_num_heads, 1)
        lq_min = _check_int("min_q_len", min_q_len, 1)
        lq_max = _check_int("max_q_len", max_q_len, 1)
        _check_range("min_q_len", lq_min, "max_q_len", lq_max)
        lk_min = _check_int("min_kv_len", min_kv_len, 1)
        lk_max = _check_int("max_kv_len", max_kv_len, 1)
        _check_range("min_kv_len", lk_min, "max_kv_len", lk_max)
        if isinstance(head_dims, (str, bytes)) or not isinstance(head_dims, Sequence) or not head_dims:
            raise InvalidArgument(f"head_dims must be a non-empty sequence of int, but was {head_dims!r}")
        dims = tuple(_check_int("head_dims", d, 1) for d in head_dims)
        layouts = _check_choices("mask_layouts", mask_layouts, ALL_MASK_LAYOUTS)
        if "sequence_padding" in layouts and not self_attention:
            raise InvalidArgument("mask_layouts contains 'sequence_padding', which needs self_attention=True")
        patterns = _check_choices("mask_patterns", mask_patterns, MASK_PATTERNS)
        for name, flag in (
            ("allow_no_mask", allow_no_mask), ("gqa", gqa), ("bias", bias),
            ("self_attention", self_attention), ("allow_mask", allow_mask),
        ):  # fmt: skip
            if not isinstance(flag, bool):
                raise InvalidArgument(f"{name} must be a bool, but was {flag!r}")
        if causal is True:
            alignment: str | None = "top_left"
        elif causal is False:
            alignment = None
        elif causal in CAUSAL_ALIGNMENTS:
            alignment = str(causal)
        else:
            raise InvalidArgument(
                f"causal must be False, True (top_left), 'top_left' or 'bottom_right', but was {causal!r}"
            )
        if alignment is not None:  # the causal part is the causal mask: padding comes on top
            layouts = tuple(lay for lay in layouts if lay in ("key_padding", "sequence_padding")) or layouts
        l_stds = _check_stds("logit_stds", logit_stds)
        v_stds = _check_stds("value_stds", value_stds)
        shifts = _check_numbers("logit_shifts", logit_shifts)
        means = _check_numbers("value_means", value_means)
        h_scales = _check_stds("head_scales", head_scales)
        if isinstance(tile_lengths, (str, bytes)) or not isinstance(tile_lengths, Sequence):
            raise InvalidArgument(f"tile_lengths must be a sequence of int, but was {tile_lengths!r}")
        tiles = tuple(_check_int("tile_lengths", t, 1) for t in tile_lengths)
        # Short queries in most examples (cheap); keys short in half, long or at a tile boundary.
        q_default = st.composite(_Length(lq_min, lq_max, 6, tiles, (14, 1, 1)).draw)()
        kv_default = st.composite(_Length(lk_min, lk_max, 8, tiles, (2, 1, 1)).draw)()
        if self_attention and q_len is None:
            q_default = kv_default  # Lq = Lk: drawn as a key length
        sizes = _Sizes(
            batch=_size("batch_size", batch_size, _ints(1, b_max)),
            heads=_size("num_heads", num_heads, _ints(1, h_max)),
            kv_heads=None if num_kv_heads is None else _size("num_kv_heads", num_kv_heads, None),
            q_len=_size("q_len", q_len, q_default),
            kv_len=_size("kv_len", kv_len, kv_default),
            head_dim=None if head_dim is None else _size("head_dim", head_dim, None),
            scale=_scale_strategy(scale),
            dtype=_dtype_strategy(dtype, dts),
        )
        return _attention_cases(
            dts, devs, sizes, dims, layouts, patterns, allow_no_mask and allow_mask, allow_mask, l_stds,
            v_stds, shifts, means, h_scales, gqa, bias, alignment, self_attention,
        )  # fmt: skip

    return _Named(build, _call_repr("attention_cases", arguments, attention_cases))


Size = int | st.SearchStrategy[int] | None


@dataclass(frozen=True)
class _Sizes:
    batch: st.SearchStrategy[int]
    heads: st.SearchStrategy[int]
    kv_heads: st.SearchStrategy[int] | None
    q_len: st.SearchStrategy[int]
    kv_len: st.SearchStrategy[int]
    head_dim: st.SearchStrategy[int] | None
    scale: st.SearchStrategy[float] | None
    dtype: st.SearchStrategy[torch.dtype]


def _dtype_strategy(dtype: object, dtypes: tuple[torch.dtype, ...]) -> st.SearchStrategy[torch.dtype]:
    if dtype is None:
        return _choice(dtypes)
    if isinstance(dtype, st.SearchStrategy):
        return dtype.map(_drawn_dtype)
    return st.just(_drawn_dtype(dtype, "dtype"))


def _drawn_dtype(value: object, name: str = "dtype (drawn)") -> torch.dtype:
    if value not in ALL_DTYPES:
        raise InvalidArgument(f"{name} must be one of {list(ALL_DTYPES)}, but was {value!r}")
    return value  # type: ignore[return-value]


def _size(name: str, value: object, default: st.SearchStrategy[int] | None) -> st.SearchStrategy[int]:
    if value is None:
        assert default is not None
        return default
    if isinstance(value, st.SearchStrategy):
        return value.map(functools.partial(_drawn_size, name))
    return st.just(_check_int(name, value, 1))


def _drawn_size(name: str, value: object) -> int:
    return _check_int(f"{name} (drawn)", value, 1)


def _scale_strategy(scale: object) -> st.SearchStrategy[float] | None:
    if scale is None:
        return None
    if isinstance(scale, st.SearchStrategy):
        return scale.map(_checked_scale)
    return st.just(_checked_scale(scale))


def _checked_scale(value: object) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not abs(value) < float("inf"):
        raise InvalidArgument(f"scale must be a finite number, but was {value!r}")
    return float(value)


def _divisors(n: int) -> tuple[int, ...]:
    return (n, *(d for d in range(1, n) if n % d == 0))


_BIAS_SIZES = (1.0, 10.0)


@st.composite
def _attention_cases(
    draw: st.DrawFn,
    dtypes: tuple[torch.dtype, ...],
    devices: tuple[str, ...],
    sizes: _Sizes,
    dims: tuple[int, ...],
    layouts: tuple[str, ...],
    patterns: tuple[str, ...],
    allow_no_mask: bool,
    allow_mask: bool,
    logit_stds: tuple[float, ...],
    value_stds: tuple[float, ...],
    logit_shifts: tuple[float, ...],
    value_means: tuple[float, ...],
    head_scales: tuple[float, ...],
    gqa: bool,
    bias: bool,
    causal: str | None,
    self_attention: bool,
) -> AttentionCase:
    b = draw(sizes.batch)
    h = draw(sizes.heads)
    if sizes.kv_heads is not None:
        hkv = draw(sizes.kv_heads)
        if h % hkv:
            raise InvalidArgument(f"num_kv_heads drew {hkv}, which does not divide num_heads={h}")
    else:
        hkv = draw(_choice(_divisors(h))) if gqa else h
    lq = draw(sizes.q_len)
    lk = lq if self_attention else draw(sizes.kv_len)
    if sizes.head_dim is not None:
        d = dv = draw(sizes.head_dim)
    else:
        d = draw(_choice(dims))
        dv = draw(_choice(dims))
    dtype = draw(sizes.dtype)
    device = draw(_choice(devices))
    no_mask = not allow_mask or (allow_no_mask and draw(_ints(0, 7)) == 7)
    mask = None if no_mask else _draw_mask(draw, draw(_choice(layouts)), b, h, lq, lk, patterns)
    bias_spec = None
    if bias and draw(_ints(0, 3)):
        kind = draw(_choice(BIAS_KINDS))
        bias_spec = BiasSpec(
            kind, draw(_choice(_BIAS_SIZES)), draw(_ints(0, 2**16)) if kind == "random" else 0
        )
    spec = CaseSpec(
        batch_size=b,
        num_heads=h,
        q_len=lq,
        kv_len=lk,
        head_dim=d,
        value_dim=dv,
        dtype=dtype,
        device=device,
        seed=draw(_ints(0, 2**32 - 1)),
        logit_std=tuple(draw(_choice(logit_stds)) for _ in range(b)),
        value_std=tuple(draw(_choice(value_stds)) for _ in range(b)),
        mask=mask,
        logit_shift=tuple(_in_range(draw(_choice(logit_shifts)), dtype) for _ in range(b)),
        value_mean=tuple(draw(_choice(value_means)) for _ in range(b)),
        head_scale=tuple(draw(_choice(head_scales)) for _ in range(h)),
        num_kv_heads=0 if hkv == h else hkv,
        scale=None if sizes.scale is None else draw(sizes.scale),
        bias=bias_spec,
        causal=causal,
    )
    return spec.build()


def _in_range(shift: float, dtype: torch.dtype) -> float:
    """``shift``, within ``[-HALF_SHIFT_CAP, HALF_SHIFT_CAP]`` in float16 and bfloat16 (see
    :data:`HALF_SHIFT_CAP`); unchanged in float32 and float64."""
    if dtype not in (torch.float16, torch.bfloat16):
        return shift
    return max(-HALF_SHIFT_CAP, min(HALF_SHIFT_CAP, shift))


def _check_devices(devices: object) -> tuple[str, ...]:
    if isinstance(devices, str) or not isinstance(devices, Sequence) or not devices:
        raise InvalidArgument(f"devices must be a non-empty sequence of str, but was {devices!r}")
    for dev in devices:
        try:
            torch.device(dev)
        except (RuntimeError, TypeError):
            raise InvalidArgument(f"devices contains {dev!r}, which is not a torch device") from None
    return tuple(devices)


def _check_numbers(name: str, numbers: object) -> tuple[float, ...]:
    if isinstance(numbers, (str, bytes)) or not isinstance(numbers, Sequence) or not numbers:
        raise InvalidArgument(f"{name} must be a non-empty sequence of numbers, but was {numbers!r}")
    for s in numbers:
        if not isinstance(s, (int, float)) or isinstance(s, bool) or not abs(s) < float("inf"):
            raise InvalidArgument(f"{name} must hold finite numbers, but held {s!r}")
    return tuple(float(s) for s in numbers)


def _check_stds(name: str, stds: object) -> tuple[float, ...]:
    if isinstance(stds, (str, bytes)) or not isinstance(stds, Sequence) or not stds:
        raise InvalidArgument(f"{name} must be a non-empty sequence of numbers, but was {stds!r}")
    for s in stds:
        if not isinstance(s, (int, float)) or isinstance(s, bool) or not 0 < s < float("inf"):
            raise InvalidArgument(f"{name} must hold positive finite numbers, but held {s!r}")
    return tuple(float(s) for s in stds)


#: Key-padding patterns for layer contexts (``causal`` needs query rows, which a context lacks).
LAYER_PATTERNS: tuple[str, ...] = tuple(p for p in MASK_PATTERNS if p != "causal")


def layer_cases(
    *,
    dim: int,
    context_dim: int | None = None,
    dtypes: Sequence[torch.dtype] = ALL_DTYPES,
    devices: Sequence[str] = ("cpu",),
    max_batch_size: int = 3,
    max_q_len: int = 5,
    max_kv_len: int = 64,
    stds: Sequence[float] = (1.0, 0.1, 10.0),
) -> st.SearchStrategy[LayerCase]:
    """Inputs for a layer ``fn(x, context, context_mask)``, as :class:`~xattn_ref.cases.LayerCase`.

    - ``dim``: E, the last dim of x (required).
    - ``context_dim``: E_ctx, the last dim of context (default E).
    - ``dtypes``, ``devices``: drawn from (default every dtype, the CPU).
    - ``max_batch_size``, ``max_q_len``, ``max_kv_len``: B, Lq, Lk are drawn from 1 to these.
    - ``stds``: standard deviations of x and context, drawn per batch element.

    Example::

        @given(layer_cases(dim=16, dtypes=[torch.float32]))
        def test_my_layer(case):
            y = my_layer(case.x, case.context, case.context_mask)  # context_mask: True = real token
            assert y.isfinite().all(), case.snippet()

    ``context_mask`` is ``(B, Lk)`` bool, **True = a real token**, drawn per batch element from
    the key-padding patterns; a context that is entirely padding is the simplest, so it is
    common and shrinking goes to it.
    """

    def build() -> st.SearchStrategy[LayerCase]:
        e = _check_int("dim", dim, 1)
        ec = e if context_dim is None else _check_int("context_dim", context_dim, 1)
        dts = _check_choices("dtypes", dtypes, ALL_DTYPES)
        devs = _check_devices(devices)
        b_max = _check_int("max_batch_size", max_batch_size, 1)
        lq_max = _check_int("max_q_len", max_q_len, 1)
        lk_max = _check_int("max_kv_len", max_kv_len, 1)
        sizes = _check_stds("stds", stds)
        return _layer_cases(e, ec, dts, devs, b_max, lq_max, (min(8, lk_max), lk_max), sizes)

    arguments = dict(
        dim=dim, context_dim=context_dim, dtypes=dtypes, devices=devices, max_batch_size=max_batch_size,
        max_q_len=max_q_len, max_kv_len=max_kv_len, stds=stds,
    )  # fmt: skip
    return _Named(build, _call_repr("layer_cases", arguments, layer_cases))


@st.composite
def _layer_cases(
    d: st.DrawFn,
    dim: int,
    context_dim: int,
    dtypes: tuple[torch.dtype, ...],
    devices: tuple[str, ...],
    b_max: int,
    lq_max: int,
    kv_lens: tuple[int, int],
    stds: tuple[float, ...],
) -> LayerCase:
    b = d(_ints(1, b_max))
    split, high = kv_lens
    lk = _Length(1, high, split).draw(d)  # half short, half anywhere up to ``high``
    spec = LayerCaseSpec(
        batch_size=b,
        q_len=d(_ints(1, lq_max)),
        kv_len=lk,
        dim=dim,
        context_dim=context_dim,
        dtype=d(_choice(dtypes)),
        device=d(_choice(devices)),
        seed=d(_ints(0, 2**32 - 1)),
        x_std=tuple(d(_choice(stds)) for _ in range(b)),
        context_std=tuple(d(_choice(stds)) for _ in range(b)),
        mask=_draw_mask(d, "key_padding", b, 1, 1, lk, LAYER_PATTERNS),
    )
    return spec.build()


def encoder_cases(
    *,
    dim: int,
    dtypes: Sequence[torch.dtype] = ALL_DTYPES,
    devices: Sequence[str] = ("cpu",),
    max_batch_size: int = 3,
    max_length: int = 24,
    stds: Sequence[float] = (1.0, 0.1, 10.0),
) -> st.SearchStrategy[EncoderCase]:
    """Inputs for a self-attention layer ``fn(x, mask)``, as :class:`~xattn_ref.cases.EncoderCase`.

    - ``dim``: E, the last dim of x (required).
    - ``dtypes``, ``devices``: drawn from (default every dtype, the CPU).
    - ``max_batch_size``, ``max_length``: B and L are drawn from 1 to these.
    - ``stds``: standard deviations of x, drawn per batch element.

    Example::

        @given(encoder_cases(dim=16, dtypes=[torch.float32]))
        def test_my_encoder(case):
            y = my_encoder(case.x, case.mask)  # mask: True = a real token
            assert y.isfinite().all(), case.snippet()

    ``mask`` is ``(B, L)`` bool, **True = a real token**, drawn per sequence from the padding
    patterns; a sequence that is all padding is the simplest, so it is common and shrinking goes
    to it.
    """

    def build() -> st.SearchStrategy[EncoderCase]:
        e = _check_int("dim", dim, 1)
        dts = _check_choices("dtypes", dtypes, ALL_DTYPES)
        devs = _check_devices(devices)
        b_max = _check_int("max_batch_size", max_batch_size, 1)
        l_max = _check_int("max_length", max_length, 1)
        sizes = _check_stds("stds", stds)
        return _encoder_cases(e, dts, devs, b_max, l_max, sizes)

    arguments = dict(
        dim=dim,
        dtypes=dtypes,
        devices=devices,
        max_batch_size=max_batch_size,
        max_length=max_length,
        stds=stds,
    )
    return _Named(build, _call_repr("encoder_cases", arguments, encoder_cases))


@st.composite
def _encoder_cases(
    d: st.DrawFn,
    dim: int,
    dtypes: tuple[torch.dtype, ...],
    devices: tuple[str, ...],
    b_max: int,
    l_max: int,
    stds: tuple[float, ...],
) -> EncoderCase:
    b = d(_ints(1, b_max))
    length = d(_ints(1, l_max))
    spec = EncoderCaseSpec(
        batch_size=b,
        length=length,
        dim=dim,
        dtype=d(_choice(dtypes)),
        device=d(_choice(devices)),
        seed=d(_ints(0, 2**32 - 1)),
        x_std=tuple(d(_choice(stds)) for _ in range(b)),
        mask=_draw_mask(d, "key_padding", b, 1, 1, length, LAYER_PATTERNS),
    )
    return spec.build()


# ``st.from_type(AttentionCase)`` and ``st.from_type(MaskSpec)`` draw the defaults.
st.register_type_strategy(AttentionCase, attention_cases())
st.register_type_strategy(MaskSpec, mask_specs())
