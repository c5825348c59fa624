"""Plain, printable descriptions of attention inputs, and the code that builds tensors from them.

A spec holds only small values (shapes, pattern names, lengths, seeds, scales); ``build()``
turns it into tensors with torch's generator. ``repr(spec)`` is valid Python, so a failing
case is reproduced by pasting one line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

__all__ = [
    "MASK_LAYOUTS",
    "MASK_PATTERNS",
    "AttentionCase",
    "CaseSpec",
    "MaskSpec",
    "SlicePattern",
]

#: Mask layouts and the shape each gives, for q ``(B, H, Lq, D)`` and k ``(B, H, Lk, D)``.
MASK_LAYOUTS: tuple[str, ...] = ("key_padding", "query_key", "full", "shared")

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
        elif self.name == "random":
            gen = torch.Generator().manual_seed(self.seed)
            out = torch.rand(q_len, kv_len, generator=gen) < self.arg / 8
            cleared = torch.randperm(q_len, generator=gen)[: self.empty_rows]
            out[cleared] = False
            return out
        else:
            raise ValueError(f"unknown mask pattern {self.name!r}; expected one of {MASK_PATTERNS}")
        return row.expand(q_len, kv_len).clone()

    def describe(self) -> str:
        if self.name in ("all_false", "all_true"):
            return self.name
        if self.name == "causal":
            return "causal(lower right)"
        if self.name == "random":
            return f"random(p={self.arg}/8, seed={self.seed}, empty_rows={self.empty_rows})"
        return f"{self.name}({self.arg})"


@dataclass(frozen=True)
class MaskSpec:
    """A bool mask (True = may attend): a layout and one slice pattern per slice.

    Layouts, for q ``(B, H, Lq, D)`` and k ``(B, H, Lk, D)``:

    - ``key_padding``: ``(B, 1, 1, Lk)``, one pattern per batch element;
    - ``query_key``: ``(B, 1, Lq, Lk)``, one per batch element;
    - ``full``: ``(B, H, Lq, Lk)``, one per (batch element, head);
    - ``shared``: ``(Lq, Lk)``, one for all.
    """

    layout: str
    slices: tuple[SlicePattern, ...]

    def shape(self, batch_size: int, num_heads: int, q_len: int, kv_len: int) -> tuple[int, ...]:
        return {
            "key_padding": (batch_size, 1, 1, kv_len),
            "query_key": (batch_size, 1, q_len, kv_len),
            "full": (batch_size, num_heads, q_len, kv_len),
            "shared": (q_len, kv_len),
        }[self.layout]

    def build(self, batch_size: int, num_heads: int, q_len: int, kv_len: int) -> torch.Tensor:
        shape = self.shape(batch_size, num_heads, q_len, kv_len)
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
        return (
            f"{self.layout} ({'B, 1, 1, Lk' if self.layout == 'key_padding' else 'B, 1, Lq, Lk'}): "
            + ", ".join(parts)
        )


@dataclass(frozen=True)
class CaseSpec:
    """Everything needed to rebuild one attention case, exactly.

    Values are standard normal from ``torch.Generator().manual_seed(seed)`` in float64, scaled per
    batch element (``q`` and ``k`` by ``sqrt(logit_std)`` so logits ``q.k/sqrt(D)`` have standard
    deviation ``logit_std``, ``v`` by ``value_std``), then rounded to ``dtype`` and moved to ``device``.
    """

    batch_size: int
    num_heads: int
    q_len: int
    kv_len: int
    head_dim: int
    value_dim: int
    dtype: torch.dtype
    device: str
    seed: int
    logit_std: tuple[float, ...]
    value_std: tuple[float, ...]
    mask: MaskSpec | None

    def build(self) -> AttentionCase:
        gen = torch.Generator().manual_seed(self.seed)
        b, h = self.batch_size, self.num_heads
        f64 = torch.float64
        q = torch.randn(b, h, self.q_len, self.head_dim, generator=gen, dtype=f64)
        k = torch.randn(b, h, self.kv_len, self.head_dim, generator=gen, dtype=f64)
        v = torch.randn(b, h, self.kv_len, self.value_dim, generator=gen, dtype=f64)
        qk = torch.tensor(self.logit_std, dtype=f64).sqrt().view(b, 1, 1, 1)
        q, k = q * qk, k * qk
        v = v * torch.tensor(self.value_std, dtype=f64).view(b, 1, 1, 1)
        mask = None
        if self.mask is not None:
            mask = self.mask.build(b, h, self.q_len, self.kv_len).to(self.device)
        return AttentionCase(
            q=q.to(self.dtype).to(self.device),
            k=k.to(self.dtype).to(self.device),
            v=v.to(self.dtype).to(self.device),
            mask=mask,
            spec=self,
        )

    def describe(self) -> str:
        mask = "mask None" if self.mask is None else "mask " + self.mask.describe()
        dtype = str(self.dtype).removeprefix("torch.")
        return (
            f"B={self.batch_size} H={self.num_heads} Lq={self.q_len} Lk={self.kv_len} "
            f"D={self.head_dim} Dv={self.value_dim} {dtype} {self.device}; {mask}"
        )


@dataclass(frozen=True, eq=False)
class AttentionCase:
    """Inputs for one attention call, in the layout of ``scaled_dot_product_attention``.

    - ``q`` ``(B, H, Lq, D)``, ``k`` ``(B, H, Lk, D)``, ``v`` ``(B, H, Lk, Dv)``;
    - ``mask``: ``None`` or bool broadcastable to ``(B, H, Lq, Lk)``, **True = may attend**;
    - ``spec``: the :class:`CaseSpec` it was built from (``repr(case.spec)`` rebuilds it).
    """

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    mask: torch.Tensor | None
    spec: CaseSpec

    @property
    def dtype(self) -> torch.dtype:
        return self.q.dtype

    @property
    def device(self) -> torch.device:
        return self.q.device

    @property
    def full_mask(self) -> torch.Tensor:
        """The mask broadcast to ``(B, H, Lq, Lk)`` (all True when ``mask`` is None)."""
        b, h, lq, _ = self.q.shape
        shape = (b, h, lq, self.k.shape[2])
        if self.mask is None:
            return torch.ones(shape, dtype=torch.bool, device=self.q.device)
        return self.mask.expand(shape)

    @property
    def empty_rows(self) -> torch.Tensor:
        """Bool ``(B, H, Lq)``: True where the query row may attend to no key."""
        return ~self.full_mask.any(-1)

    def to(self, *, dtype: torch.dtype | None = None, device: str | None = None) -> AttentionCase:
        """The same values in another dtype or on another device (a float64 copy is exact)."""
        dtype = self.dtype if dtype is None else dtype
        device = str(self.device) if device is None else device
        spec = dataclasses.replace(self.spec, dtype=dtype, device=device)
        mask = None if self.mask is None else self.mask.to(device)
        return AttentionCase(
            q=self.q.to(device=device, dtype=dtype),
            k=self.k.to(device=device, dtype=dtype),
            v=self.v.to(device=device, dtype=dtype),
            mask=mask,
            spec=spec,
        )

    def replace(self, **tensors: torch.Tensor | None) -> AttentionCase:
        """A copy with some of q, k, v, mask replaced (the spec is kept for the record)."""
        return dataclasses.replace(self, **tensors)  # type: ignore[arg-type]

    def describe(self) -> str:
        return self.spec.describe()

    def snippet(self) -> str:
        """Python that rebuilds this case: ``case = ...``."""
        return (
            "import torch\n"
            "from xattn_ref.strategies import AttentionCase, CaseSpec, MaskSpec, SlicePattern\n"
            f"case = {self.spec!r}.build()\n"
            "q, k, v, mask = case.q, case.k, case.v, case.mask"
        )

    def __repr__(self) -> str:
        return f"AttentionCase({self.describe()})"
