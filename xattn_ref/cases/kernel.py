"""Kernel cases: ``CaseSpec`` (small printable values) and the ``AttentionCase`` it builds, the
inputs of ``fn(q, k, v, mask)`` in SDPA's layout; the ``Case`` protocol every kind of case keeps.

Einstein notation: b batch, h heads, i query position, j key position, d head dim, e value dim.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from xattn_ref._args import check_bool_mask, check_case_extras, check_qkv, check_softcap_sinks
from xattn_ref.cases.masks import BiasSpec, MaskSpec, causal_mask, window_mask
from xattn_ref.cases.memory import lay_out, lay_out_mask

__all__ = [
    "AttentionCase",
    "CaseSpec",
]


@dataclass(frozen=True, kw_only=True)
class CaseSpec:
    """Everything needed to rebuild one attention case, exactly.

    Values are standard normal from ``torch.Generator().manual_seed(seed)`` in float64, scaled per
    batch element (``q`` and ``k`` by ``sqrt(logit_std)`` so logits ``q.k/sqrt(D)`` have standard
    deviation ``logit_std``, ``v`` by ``value_std``), then rounded to ``dtype`` and moved to ``device``.

    ``logit_shift`` (per batch element, default none) moves every logit of that element by about
    the shift: ``alpha = sqrt(|shift| sqrt(D))`` is added to ``q[..., 0]`` and ``sign(shift) alpha``
    to ``k[..., 0]``, so ``q.k/sqrt(D)`` gains ``shift`` plus ``(q_0 sign + k_0) alpha / sqrt(D)``.
    Rows whose allowed logits are all far below 0 (a very negative logsumexp, logits under a
    masking sentinel) or far above come from it.

    ``value_mean`` (per batch element, default 0) is the mean of ``v`` in units of its spread:
    ``v = value_std (value_mean + N(0, 1)) / sqrt(1 + value_mean^2)``, so its root mean square
    stays ``value_std``. Values far from zero mean make the sum ``P v`` large next to its spread,
    where an accumulator or a normalization in half precision shows. ``head_scale`` (per query
    head, default 1) multiplies ``q`` of that head, so heads with very different logit scales
    share one case.

    The dialect fields (defaults: none of them):

    - ``num_kv_heads``: k and v have this many heads (grouped-query attention; 0 = ``num_heads``);
    - ``scale``: the scale the kernel is called with (None = the default ``D ** -0.5``);
    - ``bias``: a finite additive bias on the logits (:class:`BiasSpec`);
    - ``causal``: an alignment of :data:`CAUSAL_ALIGNMENTS`, applied on top of ``mask``;
    - ``window``: a sliding window ``(left, right)`` (:func:`~xattn_ref.cases.window_mask`, as
      flash-attention's ``window_size``), applied on top of ``mask``;
    - ``softcap``: logit soft-capping, ``softcap * tanh(s / softcap)`` (Gemma 2);
    - ``sinks``: a sink logit per query head in every row's softmax denominator (gpt-oss);
    - ``memory``: how q, k, v and the mask lie in memory (:data:`~xattn_ref.cases.MEMORY_LAYOUTS`):
      the same values, laid out as real callers pass them;
    - ``shared_prefix``: the first this many keys and values of every batch element are batch
      element 0's (a prompt the sequences share; a paged call stores its full pages once, as
      prefix caching does).
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
    logit_shift: tuple[float, ...] = ()
    value_mean: tuple[float, ...] = ()
    head_scale: tuple[float, ...] = ()
    num_kv_heads: int = 0
    scale: float | None = None
    bias: BiasSpec | None = None
    causal: str | None = None
    memory: str = "contiguous"
    window: tuple[int, int] | None = None
    softcap: float | None = None
    sinks: tuple[float, ...] | None = None
    shared_prefix: int = 0

    def build(self) -> AttentionCase:
        gen = torch.Generator().manual_seed(self.seed)
        b, h, hkv = self.batch_size, self.num_heads, self.num_kv_heads or self.num_heads
        f64 = torch.float64
        q = torch.randn(b, h, self.q_len, self.head_dim, generator=gen, dtype=f64)
        k = torch.randn(b, hkv, self.kv_len, self.head_dim, generator=gen, dtype=f64)
        v = torch.randn(b, hkv, self.kv_len, self.value_dim, generator=gen, dtype=f64)
        qk = torch.tensor(self.logit_std, dtype=f64).sqrt().view(b, 1, 1, 1)
        q, k = q * qk, k * qk
        for n, shift in enumerate(self.logit_shift):
            if shift:
                alpha = (abs(shift) * self.head_dim**0.5) ** 0.5
                q[n, ..., 0] += alpha
                k[n, ..., 0] += alpha if shift > 0 else -alpha
        for n, mean in enumerate(self.value_mean):
            v[n] = (v[n] + mean) / (1 + mean**2) ** 0.5
        for n, factor in enumerate(self.head_scale):
            q[:, n] *= factor
        v = v * torch.tensor(self.value_std, dtype=f64).view(b, 1, 1, 1)
        if self.shared_prefix:
            shared = slice(0, self.shared_prefix)
            k[1:, :, shared], v[1:, :, shared] = k[:1, :, shared], v[:1, :, shared]
        mask = None
        if self.mask is not None:
            mask = self.mask.build(b, h, self.q_len, self.kv_len).to(self.device)
        bias = None
        if self.bias is not None:
            bias = self.bias.build(h, self.q_len, self.kv_len).to(self.dtype).to(self.device)
        return AttentionCase(
            q=lay_out(q.to(self.dtype).to(self.device), self.memory, "q"),
            k=lay_out(k.to(self.dtype).to(self.device), self.memory, "k"),
            v=lay_out(v.to(self.dtype).to(self.device), self.memory, "v"),
            mask=mask,  # in its own shape: the call lays it out (AttentionCase.laid_out_mask)
            spec=self,
            scale=self.scale,
            bias=bias,
            causal=self.causal,
            window=self.window,
            softcap=self.softcap,
            sinks=None if self.sinks is None else torch.tensor(self.sinks, dtype=self.dtype).to(self.device),
        )

    def describe(self) -> str:
        mask = "mask None" if self.mask is None else "mask " + self.mask.describe()
        if self.window is not None:
            mask = f"window {self.window} and {mask}"
        dtype = str(self.dtype).removeprefix("torch.")
        extra = ""
        if self.num_kv_heads and self.num_kv_heads != self.num_heads:
            extra += f" H_kv={self.num_kv_heads}"
        if self.scale is not None:
            extra += f" scale={self.scale:g}"
        if self.causal:
            mask = f"causal ({self.causal}) and {mask}"
        if self.bias is not None:
            mask += f"; {self.bias.describe()}"
        shifts = f"; logits shifted by {list(self.logit_shift)}" if any(self.logit_shift) else ""
        if any(self.value_mean):
            shifts += f"; v means {list(self.value_mean)} (x its std)"
        if any(f != 1 for f in self.head_scale):
            shifts += f"; q scaled per head by {list(self.head_scale)}"
        layout = "" if self.memory == "contiguous" else f"; memory {self.memory}"
        layout += "" if self.softcap is None else f"; soft-cap {self.softcap:g}"
        layout += "" if self.sinks is None else f"; sinks {list(self.sinks)}"
        if self.shared_prefix and self.batch_size > 1:
            layout += f"; the first {self.shared_prefix} keys the same in every batch element"
        return (
            f"B={self.batch_size} H={self.num_heads}{extra} Lq={self.q_len} Lk={self.kv_len} "
            f"D={self.head_dim} Dv={self.value_dim} {dtype} {self.device}; {mask}{shifts}{layout}"
        )


def _signs(shape: torch.Size, gen: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=gen).mul(2).sub(1).to(torch.float64)


@dataclass(frozen=True, eq=False)
class AttentionCase:
    """Inputs for one kernel call, in the layout of ``scaled_dot_product_attention``.

    - ``q`` ``(B, H, Lq, D)``, ``k`` ``(B, H_kv, Lk, D)``, ``v`` ``(B, H_kv, Lk, Dv)``; H_kv
      divides H and query head h uses kv head ``h // (H // H_kv)`` (SDPA's ``enable_gqa``);
    - ``mask``: ``None`` or bool broadcastable to ``(B, H, Lq, Lk)``, **True = may attend**;
    - ``spec``: the :class:`CaseSpec` it was built from (``repr(case.spec)`` rebuilds it), or
      None for a case made with :meth:`from_tensors`;
    - ``scale``: the kernel's scale (None: ``D ** -0.5``, and the kernel is not told);
    - ``bias``: None or a finite float bias broadcastable to ``(B, H, Lq, Lk)``, added to the
      logits of allowed keys (masked keys stay masked);
    - ``causal``: None or an alignment of :data:`CAUSAL_ALIGNMENTS`; a key is allowed when the
      mask *and* the causal mask allow it;
    - ``window``: None or a sliding window ``(left, right)`` (:func:`~xattn_ref.cases.window_mask`),
      which must allow the key too;
    - ``softcap``: None or a number > 0: the scaled logits are soft-capped, ``softcap *
      tanh(s / softcap)``, before the bias and the mask;
    - ``sinks``: None or ``(H,)``: a sink logit per query head in every row's softmax
      denominator, with no value (:func:`xattn_ref.reference.attention`).
    """

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    mask: torch.Tensor | None
    spec: CaseSpec | None
    scale: float | None = None
    bias: torch.Tensor | None = None
    causal: str | None = None
    window: tuple[int, int] | None = None
    softcap: float | None = None
    sinks: torch.Tensor | None = None

    output_name = "out"

    @classmethod
    def from_tensors(
        cls,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        scale: float | None = None,
        bias: torch.Tensor | None = None,
        causal: str | None = None,
        softcap: float | None = None,
        sinks: torch.Tensor | None = None,
    ) -> AttentionCase:
        """A case of your own tensors (checked: SDPA's layout, mask bool, True = may attend), so
        any check runs on them: ``checks.finite_output(kernel, AttentionCase.from_tensors(...))``."""
        q, k, v = check_qkv(q, k, v)
        shape = (q.shape[0], q.shape[1], q.shape[2], k.shape[2])
        if mask is not None:
            mask = check_bool_mask(mask, shape)
        check_case_extras(scale, bias, causal, shape, q)
        check_softcap_sinks(softcap, sinks, q)
        return cls(q, k, v, mask, None, scale, bias, causal, softcap=softcap, sinks=sinks)

    @property
    def dtype(self) -> torch.dtype:
        return self.q.dtype

    @property
    def device(self) -> torch.device:
        return self.q.device

    @property
    def seed(self) -> int:
        """Seeds the random tensors the checks derive from this case (cotangents, padding)."""
        return 0 if self.spec is None else self.spec.seed

    @property
    def batch_size(self) -> int:
        return int(self.q.shape[0])

    @property
    def memory(self) -> str:
        """How q, k, v and the mask lie in memory (the spec's; ``contiguous`` without one)."""
        return "contiguous" if self.spec is None else self.spec.memory

    @property
    def groups(self) -> int:
        """Query heads per kv head, ``H // H_kv`` (1 without grouped-query attention)."""
        return int(self.q.shape[1] // self.k.shape[1])

    @property
    def effective_scale(self) -> float:
        """The scale the reference uses: ``scale``, or ``D ** -0.5``."""
        return float(self.q.shape[-1] ** -0.5) if self.scale is None else float(self.scale)

    @property
    def full_mask(self) -> torch.Tensor:
        """Every key each query may attend to, ``(B, H, Lq, Lk)``: the mask and the causal mask
        (all True when there are neither)."""
        b, h, lq, _ = self.q.shape
        shape = (b, h, lq, self.k.shape[2])
        if self.mask is None:
            full = torch.ones(shape, dtype=torch.bool, device=self.q.device)
        else:
            full = self.mask.expand(shape)
        if self.causal is not None:
            full = full & causal_mask(self.causal, lq, shape[-1], self.q.device)
        if self.window is not None:
            full = full & window_mask(self.window, lq, shape[-1], self.q.device)
        return full

    @property
    def empty_rows(self) -> torch.Tensor:
        """Bool ``(B, H, Lq)``: True where the query row may attend to no key."""
        return ~self.full_mask.any(-1)

    def dead_keys(self) -> torch.Tensor:
        """Bool ``(B, H_kv, Lk)``: keys that no query (of any head of their group) may attend to."""
        b, hkv, lk = self.k.shape[0], self.k.shape[1], self.k.shape[2]
        return (~self.full_mask.any(-2)).reshape(b, hkv, self.groups, lk).all(2)

    def with_empty_rows_open(self) -> AttentionCase:
        """A copy whose rows with no allowed key allow every key (one full bool mask, no causal
        flag): what a finite sentinel (``finfo.min``) computes on such rows in exact arithmetic,
        the meaning of the empty-row policy ``finite``."""
        full = self.full_mask  # empty_rows would build it again
        return dataclasses.replace(self, mask=full | ~full.any(-1, keepdim=True), causal=None, window=None)

    def arguments(self) -> dict[str, torch.Tensor | None]:
        return {"q": self.q, "k": self.k, "v": self.v, "mask": self.mask}

    def inputs(self) -> dict[str, torch.Tensor]:
        return {"q": self.q, "k": self.k, "v": self.v}

    def to(self, *, dtype: torch.dtype | None = None, device: str | None = None) -> AttentionCase:
        """The same values in another dtype or on another device (a float64 copy is exact)."""
        dtype = self.dtype if dtype is None else dtype
        device = str(self.device) if device is None else device
        spec = None if self.spec is None else dataclasses.replace(self.spec, dtype=dtype, device=device)
        mask = None if self.mask is None else self.mask.to(device)
        bias = None if self.bias is None else self.bias.to(device=device, dtype=dtype)
        return AttentionCase(
            q=self.q.to(device=device, dtype=dtype),
            k=self.k.to(device=device, dtype=dtype),
            v=self.v.to(device=device, dtype=dtype),
            mask=mask,
            spec=spec,
            scale=self.scale,
            bias=bias,
            causal=self.causal,
            window=self.window,
            softcap=self.softcap,
            sinks=None if self.sinks is None else self.sinks.to(device=device, dtype=dtype),
        )

    def replace(self, **tensors: torch.Tensor | None) -> AttentionCase:
        """A copy with some of q, k, v, mask, bias replaced (the spec is kept for the record)."""
        return dataclasses.replace(self, **tensors)  # type: ignore[arg-type]

    # --- words for positions ---------------------------------------------------------------

    def where(self, name: str, index: tuple[int, ...]) -> str:
        """Words for a position of ``out`` or a gradient: its mask row, or its key."""
        b, h, pos = index[0], index[1], index[2]
        if name in ("out", "dq"):
            row = self.full_mask[b, h, pos]
            n, total = int(row.sum()), row.numel()
            if self.mask is None:
                return f"mask None (row [{b}, {h}, {pos}] allows all {total} keys)"
            if n == 0:
                return f"mask row [{b}, {h}, {pos}] allows no key"
            return f"mask row [{b}, {h}, {pos}] allows {n} of {total} keys"
        g = self.groups
        column = self.full_mask[b, h * g : (h + 1) * g, :, pos]
        n = int(column.sum())
        if n == 0:
            return f"key [{b}, {h}, {pos}] is masked for every query"
        return f"key [{b}, {h}, {pos}] is allowed for {n} of {column.numel()} queries"

    # --- the changes the properties make ---------------------------------------------------

    def with_padding_replaced(self) -> tuple[AttentionCase, str] | None:
        """k and v with the keys no query may attend to replaced by huge finite values of random
        sign; None when every key is allowed somewhere.

        Huge, but finite once multiplied: ``|k| = min(1e6, max / (8 max_i ||q_i||_1))`` keeps every
        score finite, ``|v| = min(1e6, max / (8 Lk))`` every weighted sum.
        """
        dead = self.dead_keys()
        if not bool(dead.any()):
            return None
        top = torch.finfo(self.dtype).max
        q_l1 = float(self.q.detach().abs().double().sum(-1).max().clamp_min(1.0))
        k_mag = min(1e6, top / (8 * q_l1))
        v_mag = min(1e6, top / (8 * self.k.shape[2]))
        gen = torch.Generator().manual_seed(self.seed + 2)
        sel = dead.unsqueeze(-1)
        k = torch.where(sel, (_signs(self.k.shape, gen) * k_mag).to(self.k), self.k)
        v = torch.where(sel, (_signs(self.v.shape, gen) * v_mag).to(self.v), self.v)
        words = (
            f"replacing the {int(dead.sum())} keys/values that no query may attend to by values of "
            f"size {k_mag:.3g} (k) and {v_mag:.3g} (v)"
        )
        return self.replace(k=k, v=v), words

    def with_padding_poisoned(self) -> tuple[AttentionCase, str] | None:
        """k and v with the keys no query may attend to set to NaN, inf and -inf (in turn); None
        when every key is allowed somewhere."""
        dead = self.dead_keys()
        if not bool(dead.any()):
            return None
        bad = torch.tensor([float("nan"), float("inf"), float("-inf")], dtype=self.dtype, device=self.device)
        k = torch.where(
            dead.unsqueeze(-1), bad[torch.arange(self.k.shape[-1], device=self.device) % 3], self.k
        )
        v = torch.where(
            dead.unsqueeze(-1), bad[torch.arange(self.v.shape[-1], device=self.device) % 3], self.v
        )
        return self.replace(
            k=k, v=v
        ), f"writing NaN, inf and -inf into the {int(dead.sum())} keys/values no query may attend to"

    def _key_padding(self) -> torch.Tensor | None:
        if self.mask is None or self.causal is not None or self.window is not None:
            return None
        full = self.full_mask
        rows = full[:, 0, 0, :]
        return rows if bool((full == rows[:, None, None, :]).all()) else None

    def compactable(self) -> bool:
        """True when the mask is a key-padding mask (the same for every head and query) and there
        is no causal mask (removing keys would move its diagonal)."""
        return self._key_padding() is not None

    def pick(self, b: int, out: torch.Tensor) -> torch.Tensor:
        """The part of the full output that :meth:`alone` ``(b)`` computes: batch element b."""
        return out[b : b + 1]

    def judged(self) -> torch.Tensor | None:
        """The output rows comparisons judge, when the case says (None: the call's empty-row
        policy does, :func:`xattn_ref._compare.judged_rows`)."""
        return None

    def alone(self, b: int) -> tuple[AttentionCase, str] | None:
        """Batch element ``b`` alone, its padding physically removed, ``mask=None``; None when its
        whole context is padding."""
        rows = self._key_padding()
        assert rows is not None, "alone() needs a key-padding mask: check compactable() first"
        keep = rows[b].nonzero().squeeze(-1)
        if keep.numel() == 0:
            return None
        bias = None
        if self.bias is not None:
            bias = self.bias.expand(*self.full_mask.shape)[b : b + 1, ..., keep]
        case = self.replace(
            q=self.q[b : b + 1],
            k=self.k[b : b + 1, :, keep],
            v=self.v[b : b + 1, :, keep],
            mask=None,
            bias=bias,
        )
        return case, (
            f"the kernel on batch element {b} alone, padding removed, mask=None: kernel(q[{b}:{b + 1}], "
            f"k[{b}:{b + 1}, :, keep], v[{b}:{b + 1}, :, keep], None) with keep = {keep.tolist()}"
        )

    def redrawn(self, b: int) -> tuple[AttentionCase, str]:
        """Batch element ``b`` redrawn with large logits (std 100) and large values."""
        gen = torch.Generator().manual_seed(self.seed + 3)
        q, k, v = (t.detach().clone() for t in (self.q, self.k, self.v))
        for t, std in ((q, 10.0), (k, 10.0), (v, 100.0)):
            t[b] = (torch.randn(t[b].shape, generator=gen, dtype=torch.float64) * std).to(t)
        return self.replace(q=q, k=k, v=v), f"batch element {b} redrawn with logits of std 100"

    def emptied(self, b: int) -> tuple[AttentionCase, str]:
        """Batch element ``b``'s context made all padding (the mask expanded over the batch)."""
        full = self.full_mask
        mask = self.mask if self.mask is not None else torch.ones_like(full[:, :1, :1, :])
        mask = mask if mask.ndim == 4 else mask.reshape(1, 1, *mask.shape)
        mask = mask.expand(full.shape[0], *mask.shape[1:]).clone()
        mask[b] = False
        return self.replace(mask=mask), f"batch element {b}'s context made all padding"

    def describe(self) -> str:
        if self.spec is not None:
            return self.spec.describe()
        mask = "None" if self.mask is None else f"bool {tuple(self.mask.shape)}"
        extra = "" if self.scale is None else f" scale={self.scale:g}"
        extra += "" if self.causal is None else f" causal ({self.causal})"
        extra += "" if self.bias is None else f" bias {tuple(self.bias.shape)}"
        extra += "" if self.softcap is None else f" soft-cap {self.softcap:g}"
        extra += "" if self.sinks is None else f" sinks {self.sinks.tolist()}"
        return (
            f"q {tuple(self.q.shape)} k {tuple(self.k.shape)} v {tuple(self.v.shape)} "
            f"{str(self.dtype).removeprefix('torch.')} {self.device}; mask {mask}{extra} (your own tensors)"
        )

    def snippet(self) -> str:
        """Python that rebuilds this case: ``case = ...``."""
        if self.spec is None:
            return "case = AttentionCase.from_tensors(q, k, v, mask)  # your own tensors"
        return (
            "import torch\n"
            "from xattn_ref.cases import AttentionCase, BiasSpec, CaseSpec, MaskSpec, SlicePattern\n"
            f"case = {self.spec!r}.build()\n"
            "q, k, v, mask = case.q, case.k, case.v, case.mask  # mask: True = may attend"
            + (
                "\nmask = case.laid_out_mask(mask)  # as the gate passes it: expanded, stride 0"
                if self.memory == "broadcast_mask"
                else ""
            )
        )

    def laid_out_mask(self, mask: torch.Tensor | None) -> torch.Tensor | None:
        """A 4-D mask (this case's, or one rendered from it) in the case's memory layout: with
        ``broadcast_mask``, expanded to ``(B, H, Lq, Lk)`` with stride 0 (see
        :mod:`xattn_ref.cases.memory`)."""
        b, h, lq, _ = self.q.shape
        return lay_out_mask(mask, self.memory, (b, h, lq, self.k.shape[2]))

    def __repr__(self) -> str:
        return f"AttentionCase({self.describe()})"
