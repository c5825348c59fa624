"""Kernel cases: ``attention_cases``, the inputs of ``fn(q, k, v, mask)`` with their mask."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from xattn_ref._args import check_choices as _check_choices
from xattn_ref._args import check_int as _check_int
from xattn_ref._args import check_range as _check_range
from xattn_ref._devices import ALL_DTYPES
from xattn_ref.cases import (
    ALL_MASK_LAYOUTS,
    ALL_MASK_PATTERNS,
    BIAS_KINDS,
    CAUSAL_ALIGNMENTS,
    MASK_LAYOUTS,
    MASK_PATTERNS,
    MEMORY_LAYOUTS,
    AttentionCase,
    BiasSpec,
    CaseSpec,
)
from xattn_ref.strategies._base import (
    DEFAULT_HEAD_SCALES,
    DEFAULT_LOGIT_SHIFTS,
    DEFAULT_LOGIT_STDS,
    DEFAULT_TILE_LENGTHS,
    DEFAULT_VALUE_MEANS,
    DEFAULT_VALUE_STDS,
    HALF_SHIFT_CAP,
    SHIFT_CAPS,
    SINK_LOGITS,
    SOFTCAPS,
    _choice,
    _ints,
    lazy,
)
from xattn_ref.strategies.masks import _draw_mask, _Length

__all__ = [
    "attention_cases",
]


@lazy
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
    short_queries: bool = False,
    allow_mask: bool = True,
    memory_layouts: Sequence[str] = MEMORY_LAYOUTS,
    window: bool = False,
    softcap: bool = False,
    sinks: bool = False,
    shared_prefix: bool = False,
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
      float16 and bfloat16 within ``±HALF_SHIFT_CAP`` (30), float32 within ``±1e5``
      (:data:`SHIFT_CAPS`).
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
    - ``short_queries``: Lq <= Lk (Lq is cut to the drawn Lk), for causal kernels documented
      for no more queries than keys.
    - ``allow_mask``: False draws ``mask=None`` only (a kernel that takes no mask).
    - ``window``: True draws a sliding window ``(left, right)`` per case (flash-attention's
      ``window_size``, bottom-right aligned, -1 unbounded), its edges near the diagonal often.
    - ``softcap``: True draws a logit soft-cap per case from :data:`SOFTCAPS` (none, then
      Gemma 2's 50 down to 1, where most logits saturate).
    - ``sinks``: True draws a sink logit per query head from :data:`SINK_LOGITS` (gpt-oss's
      attention sinks: in every row's denominator, with no value).
    - ``memory_layouts``: how q, k, v (and the mask, as the gate passes it) lie in memory, drawn
      from :data:`~xattn_ref.cases.MEMORY_LAYOUTS` (contiguous, transposed views, slices of a
      fused projection, a mask broadcast with stride 0); ``["contiguous"]`` for none.
    - ``shared_prefix``: True draws, in three cases in four of two or more batch elements,
      leading keys that every element shares with the first (the same k and v: a prompt several
      sequences share, whose pages a paged cache stores once); all of Lk in three in four.

    Example::

        @given(attention_cases(dtypes=[torch.float16], num_kv_heads=1, causal="top_left"))
        def test_finite(case):
            out = my_attention(case.q, case.k, case.v, case.mask, is_causal=True)
            assert out.isfinite().all(), case.snippet()

    Shrinking goes to one batch element, one head, the shortest lengths, float64 (the first
    dtype), a ``key_padding`` mask and the ``all_false`` pattern, no bias, the first scale.
    """

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
    patterns = _check_choices("mask_patterns", mask_patterns, ALL_MASK_PATTERNS)
    memories = _check_choices("memory_layouts", memory_layouts, MEMORY_LAYOUTS)
    for name, flag in (
        ("allow_no_mask", allow_no_mask), ("gqa", gqa), ("bias", bias),
        ("self_attention", self_attention), ("short_queries", short_queries), ("allow_mask", allow_mask),
        ("window", window), ("softcap", softcap), ("sinks", sinks), ("shared_prefix", shared_prefix),
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
        _Choices(
            dtypes=dts,
            devices=devs,
            sizes=sizes,
            head_dims=dims,
            mask_layouts=layouts,
            mask_patterns=patterns,
            allow_no_mask=allow_no_mask and allow_mask,
            allow_mask=allow_mask,
            logit_stds=l_stds,
            value_stds=v_stds,
            logit_shifts=shifts,
            value_means=means,
            head_scales=h_scales,
            gqa=gqa,
            bias=bias,
            causal=alignment,
            self_attention=self_attention,
            short_queries=short_queries,
            memory_layouts=memories,
            window=window,
            softcap=softcap,
            sinks=sinks,
            shared_prefix=shared_prefix,
        )
    )


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


@dataclass(frozen=True, kw_only=True)
class _Choices:
    """What :func:`attention_cases` draws from, checked: its arguments by their own names (the
    sizes as strategies, :class:`_Sizes`)."""

    dtypes: tuple[torch.dtype, ...]
    devices: tuple[str, ...]
    sizes: _Sizes
    head_dims: tuple[int, ...]
    mask_layouts: tuple[str, ...]
    mask_patterns: tuple[str, ...]
    allow_no_mask: bool
    allow_mask: bool
    logit_stds: tuple[float, ...]
    value_stds: tuple[float, ...]
    logit_shifts: tuple[float, ...]
    value_means: tuple[float, ...]
    head_scales: tuple[float, ...]
    gqa: bool
    bias: bool
    causal: str | None
    self_attention: bool
    short_queries: bool
    memory_layouts: tuple[str, ...]
    window: bool
    softcap: bool
    sinks: bool
    shared_prefix: bool


@st.composite
def _attention_cases(draw: st.DrawFn, c: _Choices) -> AttentionCase:
    sizes = c.sizes
    b = draw(sizes.batch)
    h = draw(sizes.heads)
    if sizes.kv_heads is not None:
        hkv = draw(sizes.kv_heads)
        if h % hkv:
            raise InvalidArgument(f"num_kv_heads drew {hkv}, which does not divide num_heads={h}")
    else:
        hkv = draw(_choice(_divisors(h))) if c.gqa else h
    lq = draw(sizes.q_len)
    lk = lq if c.self_attention else draw(sizes.kv_len)
    lq = min(lq, lk) if c.short_queries else lq
    if sizes.head_dim is not None:
        d = dv = draw(sizes.head_dim)
    else:
        d = draw(_choice(c.head_dims))
        dv = draw(_choice(c.head_dims))
    dtype = draw(sizes.dtype)
    device = draw(_choice(c.devices))
    no_mask = not c.allow_mask or (c.allow_no_mask and draw(_ints(0, 7)) == 7)
    mask = None if no_mask else _draw_mask(draw, draw(_choice(c.mask_layouts)), b, h, lq, lk, c.mask_patterns)
    bias_spec = None
    if c.bias and draw(_ints(0, 3)):
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
        logit_std=tuple(draw(_choice(c.logit_stds)) for _ in range(b)),
        value_std=tuple(draw(_choice(c.value_stds)) for _ in range(b)),
        mask=mask,
        logit_shift=tuple(_in_range(draw(_choice(c.logit_shifts)), dtype) for _ in range(b)),
        value_mean=tuple(draw(_choice(c.value_means)) for _ in range(b)),
        head_scale=tuple(draw(_choice(c.head_scales)) for _ in range(h)),
        num_kv_heads=0 if hkv == h else hkv,
        scale=None if sizes.scale is None else draw(sizes.scale),
        bias=bias_spec,
        causal=c.causal,
        memory=draw(_choice(c.memory_layouts)),
        window=_draw_window(draw, lq, lk) if c.window else None,
        softcap=draw(_choice(SOFTCAPS)) if c.softcap else None,
        sinks=tuple(draw(_choice(SINK_LOGITS)) for _ in range(h)) if c.sinks else None,
        shared_prefix=_draw_prefix(draw, b, lk) if c.shared_prefix else 0,
    )
    return spec.build()


def _draw_prefix(draw: st.DrawFn, batch_size: int, kv_len: int) -> int:
    """Leading keys every batch element shares with the first: none first (shrinking goes
    there), in three cases in four of two or more elements; all of them (three in four), or
    anywhere."""
    if batch_size < 2 or not draw(_ints(0, 3)):
        return 0
    return kv_len if draw(_ints(0, 3)) else draw(_ints(1, kv_len))


def _draw_window(draw: st.DrawFn, q_len: int, kv_len: int) -> tuple[int, int]:
    """A sliding window ``(left, right)`` whose edges fall inside the case often: unbounded (-1)
    first, so shrinking goes there; 0 and 1 (the edge one key from the diagonal, where an off by
    one shows); one short of the context; anywhere."""
    edges = (-1, 0, 1, max(0, kv_len - 2), -2)
    left, right = (draw(_choice(edges)) for _ in range(2))
    return tuple(draw(_ints(0, kv_len)) if e == -2 else e for e in (left, right))  # type: ignore[return-value]


def _in_range(shift: float, dtype: torch.dtype) -> float:
    """``shift`` within the dtype's ``[-cap, cap]`` (:data:`SHIFT_CAPS`: where its logits keep
    digits to judge)."""
    cap = SHIFT_CAPS.get(str(dtype).removeprefix("torch."), HALF_SHIFT_CAP)
    return max(-cap, min(cap, shift))


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
