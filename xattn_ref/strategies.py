"""Hypothesis strategies for attention inputs and masks.

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

from collections.abc import Sequence

import torch
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from xattn_ref._devices import ALL_DTYPES
from xattn_ref._spec import (
    MASK_LAYOUTS,
    MASK_PATTERNS,
    AttentionCase,
    CaseSpec,
    MaskSpec,
    SlicePattern,
)
from xattn_ref._strategy_args import _check_choices, _check_int, _check_range, _lazy

__all__ = [
    "MASK_LAYOUTS",
    "MASK_PATTERNS",
    "AttentionCase",
    "CaseSpec",
    "MaskSpec",
    "SlicePattern",
    "attention_cases",
    "mask_specs",
    "masks",
]

#: Standard deviations of the logits ``q.k/sqrt(D)`` drawn per batch element. 100 puts the
#: largest logits of a row in the hundreds, where an unshifted ``exp`` overflows.
DEFAULT_LOGIT_STDS: tuple[float, ...] = (1.0, 0.01, 10.0, 100.0)
#: Standard deviations of ``v`` drawn per batch element.
DEFAULT_VALUE_STDS: tuple[float, ...] = (1.0, 1e-3, 1e3)


def _slice_patterns(patterns: tuple[str, ...], q_len: int, kv_len: int) -> st.SearchStrategy[SlicePattern]:
    @st.composite
    def draw_slice(draw: st.DrawFn) -> SlicePattern:
        name = draw(st.sampled_from(patterns))
        if name in ("all_false", "all_true", "causal"):
            return SlicePattern(name)
        if name == "one_key":
            return SlicePattern(name, arg=draw(st.integers(0, kv_len - 1)))
        if name in ("right_padding", "left_padding"):
            return SlicePattern(name, arg=draw(st.integers(0, kv_len)))
        return SlicePattern(
            name,
            arg=draw(st.integers(1, 7)),
            seed=draw(st.integers(0, 2**16)),
            empty_rows=draw(st.integers(0, q_len)),
        )

    return draw_slice()


def _mask_specs(
    batch_size: int,
    num_heads: int,
    q_len: int,
    kv_len: int,
    layouts: tuple[str, ...],
    patterns: tuple[str, ...],
) -> st.SearchStrategy[MaskSpec]:
    @st.composite
    def draw_mask(draw: st.DrawFn) -> MaskSpec:
        layout = draw(st.sampled_from(layouts))
        count = {"key_padding": batch_size, "query_key": batch_size, "shared": 1}.get(
            layout, batch_size * num_heads
        )
        rows = 1 if layout == "key_padding" else q_len
        slices = draw(st.lists(_slice_patterns(patterns, rows, kv_len), min_size=count, max_size=count))
        return MaskSpec(layout, tuple(slices))

    return draw_mask()


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

    return _lazy(build)


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
    return specs.map(lambda spec: spec.build(batch_size, num_heads, q_len, kv_len).to(device))


def attention_cases(
    *,
    dtypes: Sequence[torch.dtype] = ALL_DTYPES,
    devices: Sequence[str] = ("cpu",),
    max_batch_size: int = 3,
    max_num_heads: int = 2,
    min_q_len: int = 1,
    max_q_len: int = 6,
    min_kv_len: int = 1,
    max_kv_len: int = 128,
    head_dims: Sequence[int] = (8, 1, 16, 64),
    mask_layouts: Sequence[str] = MASK_LAYOUTS,
    mask_patterns: Sequence[str] = MASK_PATTERNS,
    allow_no_mask: bool = True,
    logit_stds: Sequence[float] = DEFAULT_LOGIT_STDS,
    value_stds: Sequence[float] = DEFAULT_VALUE_STDS,
) -> st.SearchStrategy[AttentionCase]:
    """Inputs for ``attention(q, k, v, mask)`` in SDPA's layout, as :class:`AttentionCase`.

    - ``dtypes``: dtypes to draw from (default float64, float32, float16, bfloat16).
    - ``devices``: devices to draw from, e.g. ``["cpu", "cuda"]`` (default CPU only).
    - ``max_batch_size``, ``max_num_heads``: B and H are drawn from 1 to these.
    - ``min_q_len``, ``max_q_len``: range of Lq (default 1 to 6).
    - ``min_kv_len``, ``max_kv_len``: range of Lk (default 1 to 128: half the examples use
      Lk <= 8, the other half reach the long contexts that size-dispatched kernels use).
    - ``head_dims``: head dims D and value dims Dv to draw from (independently).
    - ``mask_layouts``, ``mask_patterns``: as for :func:`masks`; the mask is bool,
      **True = may attend**.
    - ``allow_no_mask``: whether ``mask=None`` is drawn (one case in eight).
    - ``logit_stds``: standard deviations of ``q.k/sqrt(D)``, drawn per batch element.
    - ``value_stds``: standard deviations of ``v``, drawn per batch element.

    Example::

        @given(attention_cases(dtypes=[torch.float16], max_kv_len=16))
        def test_finite(case):
            out = my_attention(case.q, case.k, case.v, case.mask)
            assert out.isfinite().all(), case.snippet()

    Shrinking goes to one batch element, one head, the shortest lengths, float64 (the first
    dtype), a ``key_padding`` mask and the ``all_false`` pattern.
    """

    def build() -> st.SearchStrategy[AttentionCase]:
        dts = _check_choices("dtypes", dtypes, ALL_DTYPES)
        if isinstance(devices, str) or not isinstance(devices, Sequence) or not devices:
            raise InvalidArgument(f"devices must be a non-empty sequence of str, but was {devices!r}")
        for dev in devices:
            try:
                torch.device(dev)
            except (RuntimeError, TypeError):
                raise InvalidArgument(f"devices contains {dev!r}, which is not a torch device") from None
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
        layouts = _check_choices("mask_layouts", mask_layouts, MASK_LAYOUTS)
        patterns = _check_choices("mask_patterns", mask_patterns, MASK_PATTERNS)
        if not isinstance(allow_no_mask, bool):
            raise InvalidArgument(f"allow_no_mask must be a bool, but was {allow_no_mask!r}")
        for name, stds in (("logit_stds", logit_stds), ("value_stds", value_stds)):
            if isinstance(stds, (str, bytes)) or not isinstance(stds, Sequence) or not stds:
                raise InvalidArgument(f"{name} must be a non-empty sequence of numbers, but was {stds!r}")
            for s in stds:
                if not isinstance(s, (int, float)) or isinstance(s, bool) or not 0 < s < float("inf"):
                    raise InvalidArgument(f"{name} must hold positive finite numbers, but held {s!r}")
        # Half the examples stay short; the rest reach long, size-dispatched contexts.
        split = min(max(lk_min, 8), lk_max)
        kv_lens = st.one_of(st.integers(lk_min, split), st.integers(split, lk_max))

        @st.composite
        def draw_case(draw: st.DrawFn) -> AttentionCase:
            b = draw(st.integers(1, b_max))
            h = draw(st.integers(1, h_max))
            lq = draw(st.integers(lq_min, lq_max))
            lk = draw(kv_lens)
            d = draw(st.sampled_from(dims))
            dv = draw(st.sampled_from(dims))
            dtype = draw(st.sampled_from(dts))
            device = draw(st.sampled_from(tuple(devices)))
            no_mask = allow_no_mask and draw(st.integers(0, 7)) == 7
            mask = None if no_mask else draw(_mask_specs(b, h, lq, lk, layouts, patterns))
            spec = CaseSpec(
                batch_size=b,
                num_heads=h,
                q_len=lq,
                kv_len=lk,
                head_dim=d,
                value_dim=dv,
                dtype=dtype,
                device=device,
                seed=draw(st.integers(0, 2**32 - 1)),
                logit_std=tuple(
                    float(x)
                    for x in draw(st.lists(st.sampled_from(tuple(logit_stds)), min_size=b, max_size=b))
                ),
                value_std=tuple(
                    float(x)
                    for x in draw(st.lists(st.sampled_from(tuple(value_stds)), min_size=b, max_size=b))
                ),
                mask=mask,
            )
            return spec.build()

        return draw_case()

    return _lazy(build)
