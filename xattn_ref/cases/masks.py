"""Masks (bool, **True = may attend**) as printable specs: layouts, slice patterns, causal
alignments and finite biases."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "ALL_MASK_LAYOUTS",
    "ALL_MASK_PATTERNS",
    "BIAS_KINDS",
    "BiasSpec",
    "CAUSAL_ALIGNMENTS",
    "MASK_LAYOUTS",
    "MASK_PATTERNS",
    "MaskSpec",
    "SlicePattern",
    "causal_mask",
    "window_mask",
]

#: Alignments of a causal mask, for q ``(.., Lq, D)`` and k ``(.., Lk, D)``: ``top_left``, query
#: i may attend to keys ``j <= i`` (SDPA's ``is_causal=True``); ``bottom_right``, keys
#: ``j <= i + Lk - Lq`` (flash-attention >= 2.1, ``causal_lower_right``: the last query sees every
#: key, as when decoding with a cache; when Lq > Lk the first Lq - Lk rows are empty).
CAUSAL_ALIGNMENTS: tuple[str, ...] = ("top_left", "bottom_right")

#: Kinds of finite additive bias on the logits: ``alibi`` (minus a per-head slope times the
#: distance), ``random`` (a learned or relative-position bias: normal, per head and position).
BIAS_KINDS: tuple[str, ...] = ("alibi", "random")


def causal_mask(alignment: str, q_len: int, kv_len: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """Bool ``(Lq, Lk)``, True = may attend, for an alignment of :data:`CAUSAL_ALIGNMENTS`::

    >>> causal_mask("top_left", 2, 3)
    tensor([[ True, False, False],
            [ True,  True, False]])
    >>> causal_mask("bottom_right", 2, 3)
    tensor([[ True,  True, False],
            [ True,  True,  True]])
    """
    if alignment not in CAUSAL_ALIGNMENTS:
        raise ValueError(f"causal alignment must be one of {CAUSAL_ALIGNMENTS}, got {alignment!r}")
    i = torch.arange(q_len, device=device).unsqueeze(-1)
    j = torch.arange(kv_len, device=device)
    return j <= i + (kv_len - q_len if alignment == "bottom_right" else 0)


def window_mask(
    window: tuple[int, int], q_len: int, kv_len: int, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """Bool ``(Lq, Lk)``, True = may attend, for a sliding window ``(left, right)`` as
    flash-attention's ``window_size``: query i, aligned bottom-right (``i' = i + Lk - Lq``), may
    attend to keys ``i' - left <= j <= i' + right``; -1 leaves that side unbounded::

    >>> window_mask((1, 0), 3, 3)
    tensor([[ True, False, False],
            [ True,  True, False],
            [False,  True,  True]])
    """
    left, right = window
    i = torch.arange(q_len, device=device).unsqueeze(-1) + (kv_len - q_len)
    j = torch.arange(kv_len, device=device)
    allowed = torch.ones(q_len, kv_len, dtype=torch.bool, device=device)
    if left >= 0:
        allowed &= j >= i - left
    if right >= 0:
        allowed &= j <= i + right
    return allowed


@dataclass(frozen=True)
class BiasSpec:
    """A finite additive bias on the logits, ``(1, H, Lq, Lk)``; it matters on allowed keys only.

    - ``alibi``: ``-size * slope_h * |j - (i + Lk - Lq)|`` with ALiBi's slopes ``2^(-8 (h+1) / H)``;
    - ``random``: standard normal times ``size`` (seeded), as a learned or relative-position bias.
    """

    kind: str
    size: float = 1.0
    seed: int = 0

    def build(self, num_heads: int, q_len: int, kv_len: int) -> torch.Tensor:
        f64 = torch.float64
        if self.kind == "alibi":
            slopes = 2.0 ** (-8.0 * torch.arange(1, num_heads + 1, dtype=f64) / num_heads)
            i = torch.arange(q_len, dtype=f64).unsqueeze(-1) + (kv_len - q_len)
            dist = (torch.arange(kv_len, dtype=f64) - i).abs()
            return (-self.size * slopes.view(-1, 1, 1) * dist).unsqueeze(0)
        if self.kind == "random":
            gen = torch.Generator().manual_seed(self.seed)
            return torch.randn(1, num_heads, q_len, kv_len, generator=gen, dtype=f64) * self.size
        raise ValueError(f"unknown bias kind {self.kind!r}; expected one of {BIAS_KINDS}")

    def describe(self) -> str:
        return f"{self.kind} bias of size {self.size:g}"


#: Mask layouts and the shape each gives, for q ``(B, H, Lq, D)`` and k ``(B, H, Lk, D)``.
MASK_LAYOUTS: tuple[str, ...] = ("key_padding", "query_key", "full", "shared")
#: Every layout, the one drawn only on request included: ``sequence_padding`` pads queries and
#: keys of one sequence alike (self-attention, Lq == Lk).
ALL_MASK_LAYOUTS: tuple[str, ...] = (*MASK_LAYOUTS, "sequence_padding")

#: Patterns of one ``(Lq, Lk)`` slice of a mask, simplest first: shrinking goes left.
#: ``all_false`` comes first: a context that is entirely padding is the simplest mask and
#: the one that breaks the most kernels.
MASK_PATTERNS: tuple[str, ...] = (
    "all_false",
    "all_true",
    "one_key",
    "right_padding",
    "left_padding",
    "causal",
    "random",
)
#: Every pattern, those drawn only on request included: ``packed`` is one sequence of a packed
#: (variable-length) batch, its own number of queries and of keys (the varlen kind's); ``cached``
#: one sequence of a KV cache, its queries the last of its keys (the paged kind's).
ALL_MASK_PATTERNS: tuple[str, ...] = (*MASK_PATTERNS, "packed", "cached")


@dataclass(frozen=True)
class SlicePattern:
    """One ``(Lq, Lk)`` slice of a mask. True = may attend.

    - ``all_false`` / ``all_true``: no key / every key.
    - ``one_key``: only key ``arg`` (modulo Lk).
    - ``right_padding``: the first ``arg`` keys (real tokens first, padding after).
    - ``left_padding``: the last ``arg`` keys.
    - ``causal``: bottom-right aligned causal; when Lq > Lk the first Lq - Lk rows are empty.
    - ``random``: each key allowed with probability ``arg / 8`` (seeded), then ``empty_rows``
      rows (seeded) cleared.
    - ``packed``: one sequence of a packed batch: its first ``arg`` keys, for its queries, all but
      the last ``empty_rows`` rows (those are no query of this sequence: zeros in the output).
    - ``cached``: one sequence of a KV cache: its first ``arg`` keys, the Lq queries being the
      last Lq of them (query i at position ``arg - Lq + i``, causal): a decode step (Lq = 1) sees
      every key, a chunk at an offset sees the keys up to its own; a query before the sequence's
      start (``arg < Lq``) allows no key.
    """

    name: str
    arg: int = 0
    seed: int = 0
    empty_rows: int = 0

    def build(self, q_len: int, kv_len: int) -> torch.Tensor:
        if self.name == "all_false":
            return torch.zeros(q_len, kv_len, dtype=torch.bool)
        if self.name == "all_true":
            return torch.ones(q_len, kv_len, dtype=torch.bool)
        j = torch.arange(kv_len)
        if self.name == "one_key":
            row = j == self.arg % kv_len
        elif self.name == "right_padding":
            row = j < self.arg
        elif self.name == "left_padding":
            row = j >= kv_len - self.arg
        elif self.name == "causal":
            i = torch.arange(q_len).unsqueeze(-1)
            return j <= i + (kv_len - q_len)
        elif self.name == "packed":
            return (j < self.arg) & (torch.arange(q_len).unsqueeze(-1) < q_len - self.empty_rows)
        elif self.name == "cached":
            return (j < self.arg) & (j <= torch.arange(q_len).unsqueeze(-1) + self.arg - q_len)
        elif self.name == "random":
            gen = torch.Generator().manual_seed(self.seed)
            out = torch.rand(q_len, kv_len, generator=gen) < self.arg / 8
            cleared = torch.randperm(q_len, generator=gen)[: self.empty_rows]
            out[cleared] = False
            return out
        else:
            raise ValueError(f"unknown mask pattern {self.name!r}; expected one of {ALL_MASK_PATTERNS}")
        return row.expand(q_len, kv_len).clone()

    def describe(self) -> str:
        if self.name in ("all_false", "all_true"):
            return self.name
        if self.name == "causal":
            return "causal(lower right)"
        if self.name == "random":
            return f"random(p={self.arg}/8, seed={self.seed}, empty_rows={self.empty_rows})"
        if self.name == "packed":
            return f"packed({self.arg} keys, all but {self.empty_rows} queries)"
        if self.name == "cached":
            return f"cached({self.arg} keys, the queries last)"
        return f"{self.name}({self.arg})"


@dataclass(frozen=True)
class MaskSpec:
    """A bool mask (True = may attend): a layout and one slice pattern per slice.

    Layouts, for q ``(B, H, Lq, D)`` and k ``(B, H, Lk, D)``:

    - ``key_padding``: ``(B, 1, 1, Lk)``, one pattern per batch element;
    - ``query_key``: ``(B, 1, Lq, Lk)``, one per batch element;
    - ``full``: ``(B, H, Lq, Lk)``, one per (batch element, head);
    - ``shared``: ``(Lq, Lk)``, one for all;
    - ``sequence_padding``: ``(B, 1, L, L)`` for self-attention, one key-padding pattern per batch
      element applied to queries and keys alike (a padded query allows no key).
    """

    layout: str
    slices: tuple[SlicePattern, ...]

    def shape(self, batch_size: int, num_heads: int, q_len: int, kv_len: int) -> tuple[int, ...]:
        return {
            "key_padding": (batch_size, 1, 1, kv_len),
            "query_key": (batch_size, 1, q_len, kv_len),
            "full": (batch_size, num_heads, q_len, kv_len),
            "shared": (q_len, kv_len),
            "sequence_padding": (batch_size, 1, q_len, kv_len),
        }[self.layout]

    def build(self, batch_size: int, num_heads: int, q_len: int, kv_len: int) -> torch.Tensor:
        shape = self.shape(batch_size, num_heads, q_len, kv_len)
        if self.layout == "sequence_padding":
            pad = torch.stack([s.build(1, kv_len)[0] for s in self.slices])  # (B, L)
            return (pad[:, None, :, None] & pad[:, None, None, :]).reshape(shape)
        rows = shape[-2]
        slices = [s.build(rows, kv_len) for s in self.slices]
        return torch.stack(slices).reshape(shape)

    def describe(self) -> str:
        if self.layout == "shared":
            return f"shared (Lq, Lk): {self.slices[0].describe()}"
        if self.layout == "full":
            parts = [f"[{n}] {s.describe()}" for n, s in enumerate(self.slices)]
            return "full (B, H, Lq, Lk), per (b, h): " + ", ".join(parts)
        parts = [f"b{n} {s.describe()}" for n, s in enumerate(self.slices)]
        if self.layout == "sequence_padding":
            return "sequence_padding (B, 1, L, L), queries and keys: " + ", ".join(parts)
        return (
            f"{self.layout} ({'B, 1, 1, Lk' if self.layout == 'key_padding' else 'B, 1, Lq, Lk'}): "
            + ", ".join(parts)
        )
