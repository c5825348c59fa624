"""Layer cases: ``LayerCase`` (``fn(x, context, context_mask)``, context_mask ``(B, Lk)``, **True
= a real context token**) and ``EncoderCase`` (``fn(x, mask)``, mask ``(B, L)``, **True = a real
token**; padded positions are queries too), with their printable specs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

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


class _Padded:
    """What a layer case and a self-attention case share: one float tensor whose positions a
    ``(B, L)`` bool mask pads (True = a real token), the float inputs ``inputs()``, and the changes
    the properties make. A subclass names them: ``_padded`` (the tensor the mask pads), ``_mask``,
    ``_unit`` (how a batch element is named), ``_where`` (how the padded positions are named)."""

    x: torch.Tensor
    spec: Any
    _padded: ClassVar[str]
    _mask: ClassVar[str]
    _unit: ClassVar[str]
    _where: ClassVar[str]
    _emptied: ClassVar[str]

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

    def inputs(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def replace(self, **tensors: torch.Tensor | None) -> Any:
        return dataclasses.replace(self, **tensors)  # type: ignore[type-var]

    def to(self, *, dtype: torch.dtype | None = None, device: str | None = None) -> Any:
        dtype = self.dtype if dtype is None else dtype
        device = str(self.device) if device is None else device
        moved: dict[str, Any] = {n: t.to(device=device, dtype=dtype) for n, t in self.inputs().items()}
        moved[self._mask] = getattr(self, self._mask).to(device)
        spec = dataclasses.replace(self.spec, dtype=dtype, device=device)
        return dataclasses.replace(self, **moved, spec=spec)  # type: ignore[type-var]

    def with_padding_replaced(self) -> tuple[Any, str] | None:
        """The padded positions replaced by large random values; None without padding."""
        pad = ~getattr(self, self._mask)
        if not bool(pad.any()):
            return None
        noisy, top = _noise_at(getattr(self, self._padded), pad, self.seed + 2)
        return self.replace(**{self._padded: noisy}), self._replaced_words(int(pad.sum()), top)

    def _replaced_words(self, count: int, top: float) -> str:
        return f"replacing the {count} {self._where} by random values of std {top:.3g}"

    def with_padding_poisoned(self) -> tuple[Any, str] | None:
        """The padded positions set to NaN, inf and -inf (in turn); None without padding."""
        pad = ~getattr(self, self._mask)
        if not bool(pad.any()):
            return None
        poisoned = _poison_at(getattr(self, self._padded), pad)
        return self.replace(**{self._padded: poisoned}), (
            f"writing NaN, inf and -inf into the {int(pad.sum())} {self._where}"
        )

    def compactable(self) -> bool:
        return True

    def redrawn(self, b: int) -> tuple[Any, str]:
        gen = torch.Generator().manual_seed(self.seed + 3)
        new = {}
        for name, t in self.inputs().items():
            t = t.clone()
            t[b] = (torch.randn(t[b].shape, generator=gen, dtype=torch.float64) * 10).to(t)
            new[name] = t
        return self.replace(**new), f"{self._unit} {b} redrawn 10x larger"

    def emptied(self, b: int) -> tuple[Any, str]:
        mask = getattr(self, self._mask).clone()
        mask[b] = False
        return self.replace(**{self._mask: mask}), self._emptied.format(b=b)

    def describe(self) -> str:
        return str(self.spec.describe())

    def snippet(self) -> str:
        spec = type(self.spec).__name__
        names = ", ".join(self.arguments())  # type: ignore[attr-defined]
        return (
            "import torch\n"
            f"from xattn_ref.cases import {spec}, MaskSpec, SlicePattern\n"
            f"case = {self.spec!r}.build()\n"
            f"{names} = {', '.join('case.' + n for n in self.arguments())}"  # type: ignore[attr-defined]
            + ("  # mask: True = a real token" if self._mask == "mask" else "")
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"


@dataclass(frozen=True, eq=False, repr=False)
class LayerCase(_Padded):
    """Inputs for one layer call ``fn(x, context, context_mask)``.

    - ``x`` ``(B, Lq, E)``, ``context`` ``(B, Lk, E_ctx)``;
    - ``context_mask`` ``(B, Lk)`` bool, **True = a real context token** (False = padding).
    """

    x: torch.Tensor
    context: torch.Tensor
    context_mask: torch.Tensor
    spec: LayerCaseSpec

    output_name = "y"
    _padded, _mask, _unit = "context", "context_mask", "batch element"
    _where, _emptied = "padded context positions", "batch element {b}'s context made all padding"

    def arguments(self) -> dict[str, torch.Tensor | None]:
        return {"x": self.x, "context": self.context, "context_mask": self.context_mask}

    def inputs(self) -> dict[str, torch.Tensor]:
        return {"x": self.x, "context": self.context}

    @property
    def empty_rows(self) -> torch.Tensor:
        """Bool ``(B, Lq)``: the queries whose context is all padding."""
        empty = ~self.context_mask.any(-1)
        return empty[:, None].expand(-1, self.x.shape[1])

    def _context_words(self, b: int) -> str:
        n = int(self.context_mask[b].sum())
        if n == 0:
            return f"the context of batch element {b} is entirely padding"
        return f"the context of batch element {b} has {n} real tokens of {self.context_mask.shape[1]}"

    def where(self, name: str, index: tuple[int, ...]) -> str:
        return self._context_words(index[0]) if index else ""

    def pick(self, b: int, out: torch.Tensor) -> torch.Tensor:
        """The part of the full output that :meth:`alone` ``(b)`` computes: batch element b."""
        return out[b : b + 1]

    def judged(self) -> torch.Tensor | None:
        """None: every query is judged, as the call's empty-row policy says."""
        return None

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

@dataclass(frozen=True, kw_only=True)
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


@dataclass(frozen=True, eq=False, repr=False)
class EncoderCase(_Padded):
    """Inputs for one self-attention layer call ``fn(x, mask)``: ``x`` ``(B, L, E)``, ``mask``
    ``(B, L)`` bool, **True = a real token**. Padded positions are queries too: their outputs
    must be finite, and are otherwise the layer's business (never compared)."""

    x: torch.Tensor
    mask: torch.Tensor
    spec: EncoderCaseSpec

    output_name = "y"
    _padded, _mask, _unit = "x", "mask", "sequence"
    _where, _emptied = "padded positions of x", "sequence {b} made all padding"

    def arguments(self) -> dict[str, torch.Tensor | None]:
        return {"x": self.x, "mask": self.mask}

    def _replaced_words(self, count: int, top: float) -> str:
        return f"replacing x at the {count} padded positions by values of std {top:.3g}"

    def inputs(self) -> dict[str, torch.Tensor]:
        return {"x": self.x}

    def where(self, name: str, index: tuple[int, ...]) -> str:
        if len(index) < 2:
            return ""
        b, i = index[0], index[1]
        n = int(self.mask[b].sum())
        what = "a real token" if bool(self.mask[b, i]) else "padding"
        return f"position [{b}, {i}] is {what}; sequence {b} has {n} real tokens of {self.mask.shape[1]}"

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
