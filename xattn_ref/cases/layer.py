"""Layer cases: ``LayerCase`` (``fn(x, context, context_mask)``, context_mask ``(B, Lk)``, **True
= a real context token**) and ``EncoderCase`` (``fn(x, mask)``, mask ``(B, L)``, **True = a real
token**; padded positions are queries too), with their printable specs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from xattn_ref.cases.masks import MaskSpec

__all__ = [
    "EncoderCase",
    "EncoderCaseSpec",
    "LayerCase",
    "LayerCaseSpec",
]


def _noise_at(t: torch.Tensor, pad: torch.Tensor, seed: int) -> tuple[torch.Tensor, float]:
    """``t`` ``(B, L, E)`` with the positions where ``pad`` ``(B, L)`` is True replaced by large
    random values (seeded; their std is returned)."""
    gen = torch.Generator().manual_seed(seed)
    top = min(1e4, torch.finfo(t.dtype).max ** 0.5 / 8)
    noise = (torch.randn(t.shape, generator=gen, dtype=torch.float64) * top).to(t)
    return torch.where(pad.unsqueeze(-1).to(t.device), noise, t), top


def _poison_at(t: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """``t`` ``(B, L, E)`` with NaN, inf and -inf (in turn along E) where ``pad`` ``(B, L)`` is True."""
    bad = torch.tensor([float("nan"), float("inf"), float("-inf")], dtype=t.dtype, device=t.device)
    fill = bad[torch.arange(t.shape[-1], device=t.device) % 3]
    return torch.where(pad.unsqueeze(-1).to(t.device), fill, t)


@dataclass(frozen=True)
class LayerCaseSpec:
    """Everything needed to rebuild one layer case (see :class:`CaseSpec`): x and context are
    standard normal from the seed, scaled per batch element; the mask is a ``key_padding``
    :class:`MaskSpec` (one pattern per batch element)."""

    batch_size: int
    q_len: int
    kv_len: int
    dim: int
    context_dim: int
    dtype: torch.dtype
    device: str
    seed: int
    x_std: tuple[float, ...]
    context_std: tuple[float, ...]
    mask: MaskSpec

    def build(self) -> LayerCase:
        gen = torch.Generator().manual_seed(self.seed)
        b, f64 = self.batch_size, torch.float64
        x = torch.randn(b, self.q_len, self.dim, generator=gen, dtype=f64)
        ctx = torch.randn(b, self.kv_len, self.context_dim, generator=gen, dtype=f64)
        x = x * torch.tensor(self.x_std, dtype=f64).view(b, 1, 1)
        ctx = ctx * torch.tensor(self.context_std, dtype=f64).view(b, 1, 1)
        mask = self.mask.build(b, 1, 1, self.kv_len).reshape(b, self.kv_len)
        return LayerCase(
            x=x.to(self.dtype).to(self.device),
            context=ctx.to(self.dtype).to(self.device),
            context_mask=mask.to(self.device),
            spec=self,
        )

    def describe(self) -> str:
        return (
            f"B={self.batch_size} Lq={self.q_len} Lk={self.kv_len} E={self.dim} E_ctx={self.context_dim} "
            f"{str(self.dtype).removeprefix('torch.')} {self.device}; context_mask {self.mask.describe()}"
        ).replace("key_padding (B, 1, 1, Lk)", "(B, Lk), True = real token")


class _OfX:
    """dtype, device, seed and batch size of a layer case, read from its input ``x`` and spec."""

    x: torch.Tensor
    spec: Any

    @property
    def dtype(self) -> torch.dtype:
        return self.x.dtype

    @property
    def device(self) -> torch.device:
        return self.x.device

    @property
    def seed(self) -> int:
        return int(self.spec.seed)

    @property
    def batch_size(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True, eq=False)
class LayerCase(_OfX):
    """Inputs for one layer call ``fn(x, context, context_mask)``.

    - ``x`` ``(B, Lq, E)``, ``context`` ``(B, Lk, E_ctx)``;
    - ``context_mask`` ``(B, Lk)`` bool, **True = a real context token** (False = padding).
    """

    x: torch.Tensor
    context: torch.Tensor
    context_mask: torch.Tensor
    spec: LayerCaseSpec

    output_name = "y"

    def arguments(self) -> dict[str, torch.Tensor | None]:
        return {"x": self.x, "context": self.context, "context_mask": self.context_mask}

    def inputs(self) -> dict[str, torch.Tensor]:
        return {"x": self.x, "context": self.context}

    @property
    def empty_rows(self) -> torch.Tensor:
        """Bool ``(B, Lq)``: the queries whose context is all padding."""
        empty = ~self.context_mask.any(-1)
        return empty[:, None].expand(-1, self.x.shape[1])

    def to(self, *, dtype: torch.dtype | None = None, device: str | None = None) -> LayerCase:
        dtype = self.dtype if dtype is None else dtype
        device = str(self.device) if device is None else device
        return LayerCase(
            x=self.x.to(device=device, dtype=dtype),
            context=self.context.to(device=device, dtype=dtype),
            context_mask=self.context_mask.to(device),
            spec=dataclasses.replace(self.spec, dtype=dtype, device=device),
        )

    def replace(self, **tensors: torch.Tensor | None) -> LayerCase:
        return dataclasses.replace(self, **tensors)  # type: ignore[arg-type]

    def _context_words(self, b: int) -> str:
        n = int(self.context_mask[b].sum())
        if n == 0:
            return f"the context of batch element {b} is entirely padding"
        return f"the context of batch element {b} has {n} real tokens of {self.context_mask.shape[1]}"

    def where(self, name: str, index: tuple[int, ...]) -> str:
        return self._context_words(index[0]) if index else ""

    def with_padding_replaced(self) -> tuple[LayerCase, str] | None:
        """The padded context positions replaced by large random values; None without padding."""
        pad = ~self.context_mask
        if not bool(pad.any()):
            return None
        context, top = _noise_at(self.context, pad, self.seed + 2)
        return self.replace(context=context), (
            f"replacing the {int(pad.sum())} padded context positions by random values of std {top:.3g}"
        )

    def with_padding_poisoned(self) -> tuple[LayerCase, str] | None:
        """The padded context positions set to NaN, inf and -inf (in turn); None without padding."""
        pad = ~self.context_mask
        if not bool(pad.any()):
            return None
        return self.replace(context=_poison_at(self.context, pad)), (
            f"writing NaN, inf and -inf into the {int(pad.sum())} padded context positions"
        )

    def compactable(self) -> bool:
        return True

    def alone(self, b: int) -> tuple[LayerCase, str] | None:
        keep = self.context_mask[b].nonzero().squeeze(-1)
        if keep.numel() == 0:
            return None
        case = self.replace(
            x=self.x[b : b + 1],
            context=self.context[b : b + 1, keep],
            context_mask=torch.ones(1, keep.numel(), dtype=torch.bool, device=self.device),
        )
        return case, f"the layer on batch element {b} alone with its padding removed (keep = {keep.tolist()})"

    def redrawn(self, b: int) -> tuple[LayerCase, str]:
        gen = torch.Generator().manual_seed(self.seed + 3)
        x, ctx = self.x.clone(), self.context.clone()
        x[b] = (torch.randn(x[b].shape, generator=gen, dtype=torch.float64) * 10).to(x)
        ctx[b] = (torch.randn(ctx[b].shape, generator=gen, dtype=torch.float64) * 10).to(ctx)
        return self.replace(x=x, context=ctx), f"batch element {b} redrawn 10x larger"

    def emptied(self, b: int) -> tuple[LayerCase, str]:
        mask = self.context_mask.clone()
        mask[b] = False
        return self.replace(context_mask=mask), f"batch element {b}'s context made all padding"

    def describe(self) -> str:
        return self.spec.describe()

    def snippet(self) -> str:
        return (
            "import torch\n"
            "from xattn_ref.cases import LayerCaseSpec, MaskSpec, SlicePattern\n"
            f"case = {self.spec!r}.build()\n"
            "x, context, context_mask = case.x, case.context, case.context_mask"
        )

    def __repr__(self) -> str:
        return f"LayerCase({self.describe()})"


@dataclass(frozen=True)
class EncoderCaseSpec:
    """Everything needed to rebuild one self-attention layer case (see :class:`CaseSpec`): x is
    standard normal from the seed, scaled per batch element; the mask is a ``key_padding``
    :class:`MaskSpec` (one pattern per batch element, True = a real token)."""

    batch_size: int
    length: int
    dim: int
    dtype: torch.dtype
    device: str
    seed: int
    x_std: tuple[float, ...]
    mask: MaskSpec

    def build(self) -> EncoderCase:
        gen = torch.Generator().manual_seed(self.seed)
        b, f64 = self.batch_size, torch.float64
        x = torch.randn(b, self.length, self.dim, generator=gen, dtype=f64)
        x = x * torch.tensor(self.x_std, dtype=f64).view(b, 1, 1)
        mask = self.mask.build(b, 1, 1, self.length).reshape(b, self.length)
        return EncoderCase(x=x.to(self.dtype).to(self.device), mask=mask.to(self.device), spec=self)

    def describe(self) -> str:
        return (
            f"B={self.batch_size} L={self.length} E={self.dim} {str(self.dtype).removeprefix('torch.')} "
            f"{self.device}; mask {self.mask.describe()}"
        ).replace("key_padding (B, 1, 1, Lk)", "(B, L), True = real token")


@dataclass(frozen=True, eq=False)
class EncoderCase(_OfX):
    """Inputs for one self-attention layer call ``fn(x, mask)``: ``x`` ``(B, L, E)``, ``mask``
    ``(B, L)`` bool, **True = a real token**. Padded positions are queries too: their outputs
    must be finite, and are otherwise the layer's business (never compared)."""

    x: torch.Tensor
    mask: torch.Tensor
    spec: EncoderCaseSpec

    output_name = "y"

    def arguments(self) -> dict[str, torch.Tensor | None]:
        return {"x": self.x, "mask": self.mask}

    def inputs(self) -> dict[str, torch.Tensor]:
        return {"x": self.x}

    def to(self, *, dtype: torch.dtype | None = None, device: str | None = None) -> EncoderCase:
        dtype = self.dtype if dtype is None else dtype
        device = str(self.device) if device is None else device
        spec = dataclasses.replace(self.spec, dtype=dtype, device=device)
        return EncoderCase(x=self.x.to(device=device, dtype=dtype), mask=self.mask.to(device), spec=spec)

    def replace(self, **tensors: torch.Tensor | None) -> EncoderCase:
        return dataclasses.replace(self, **tensors)  # type: ignore[arg-type]

    def where(self, name: str, index: tuple[int, ...]) -> str:
        if len(index) < 2:
            return ""
        b, i = index[0], index[1]
        n = int(self.mask[b].sum())
        what = "a real token" if bool(self.mask[b, i]) else "padding"
        return f"position [{b}, {i}] is {what}; sequence {b} has {n} real tokens of {self.mask.shape[1]}"

    def with_padding_replaced(self) -> tuple[EncoderCase, str] | None:
        """The padded positions of x replaced by large random values; None without padding."""
        pad = ~self.mask
        if not bool(pad.any()):
            return None
        x, top = _noise_at(self.x, pad, self.seed + 2)
        words = f"replacing x at the {int(pad.sum())} padded positions by values of std {top:.3g}"
        return self.replace(x=x), words

    def with_padding_poisoned(self) -> tuple[EncoderCase, str] | None:
        pad = ~self.mask
        if not bool(pad.any()):
            return None
        words = f"writing NaN, inf and -inf into x at the {int(pad.sum())} padded positions"
        return self.replace(x=_poison_at(self.x, pad)), words

    def compactable(self) -> bool:
        return True

    def alone(self, b: int) -> tuple[EncoderCase, str] | None:
        keep = self.mask[b].nonzero().squeeze(-1)
        if keep.numel() == 0:
            return None
        case = self.replace(x=self.x[b : b + 1, keep], mask=torch.ones(1, keep.numel(), dtype=torch.bool,
                                                                       device=self.device))  # fmt: skip
        return case, f"the layer on sequence {b} alone with its padding removed (keep = {keep.tolist()})"

    def pick(self, b: int, out: torch.Tensor) -> torch.Tensor:
        """The part of the full output that :meth:`alone` ``(b)`` computes: sequence b's real tokens."""
        return out[b : b + 1, self.mask[b].nonzero().squeeze(-1)]

    def judged(self) -> torch.Tensor:
        """Bool ``(B, L)``: the outputs that comparisons judge (real tokens)."""
        return self.mask

    def redrawn(self, b: int) -> tuple[EncoderCase, str]:
        gen = torch.Generator().manual_seed(self.seed + 3)
        x = self.x.clone()
        x[b] = (torch.randn(x[b].shape, generator=gen, dtype=torch.float64) * 10).to(x)
        return self.replace(x=x), f"sequence {b} redrawn 10x larger"

    def emptied(self, b: int) -> tuple[EncoderCase, str]:
        mask = self.mask.clone()
        mask[b] = False
        return self.replace(mask=mask), f"sequence {b} made all padding"

    def describe(self) -> str:
        return self.spec.describe()

    def snippet(self) -> str:
        return (
            "import torch\n"
            "from xattn_ref.cases import EncoderCaseSpec, MaskSpec, SlicePattern\n"
            f"case = {self.spec!r}.build()\n"
            "x, mask = case.x, case.mask  # mask: True = a real token"
        )

    def __repr__(self) -> str:
        return f"EncoderCase({self.describe()})"
