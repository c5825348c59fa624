"""Masks (bool, **True = may attend**): ``masks`` and ``mask_specs``, shrinking toward a fully
padded context."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from xattn_ref._args import check_choices as _check_choices
from xattn_ref._args import check_int as _check_int
from xattn_ref.cases import (
    ALL_MASK_PATTERNS,
    MASK_LAYOUTS,
    MASK_PATTERNS,
    MaskSpec,
    SlicePattern,
)
from xattn_ref.strategies._base import _choice, _ints, lazy

__all__ = [
    "mask_specs",
    "masks",
]


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
    if name == "cached":  # a cache as long as the case, a chunk from an empty cache, none, or any
        keys = draw(_choice((kv_len, min(q_len, kv_len), 0, -1)))
        return SlicePattern(name, arg=draw(_ints(0, kv_len)) if keys < 0 else keys)
    if name == "packed":  # as servers pack: a whole prefill, one query (decode), none, or any
        keys = draw(_choice((kv_len, 0, 1, -1)))
        queries = draw(_choice((q_len, 1, 0, -1)))
        return SlicePattern(
            name,
            arg=draw(_ints(0, kv_len)) if keys < 0 else min(keys, kv_len),
            empty_rows=q_len - (draw(_ints(0, q_len)) if queries < 0 else queries),
        )
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


@lazy
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

    b = _check_int("batch_size", batch_size, 1)
    h = _check_int("num_heads", num_heads, 1)
    lq = _check_int("q_len", q_len, 1)
    lk = _check_int("kv_len", kv_len, 1)
    lay = _check_choices("layouts", layouts, MASK_LAYOUTS)
    pat = _check_choices("patterns", patterns, ALL_MASK_PATTERNS)
    return _mask_specs(b, h, lq, lk, lay, pat)


@lazy
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
    if not isinstance(device, str):
        raise InvalidArgument(f"device must be a str such as 'cpu', but was {device!r}")
    specs = mask_specs(
        batch_size=batch_size,
        num_heads=num_heads,
        q_len=q_len,
        kv_len=kv_len,
        layouts=layouts,
        patterns=patterns,
    )
    return specs.map(lambda spec: spec.build(batch_size, num_heads, q_len, kv_len).to(device))
