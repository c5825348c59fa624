"""Adapters to real attention code as targets: SDPA's backends one by one (``sdpa_math``,
``sdpa_flash``, ``sdpa_efficient``, ``sdpa_cudnn``), FlexAttention with a ``BlockMask``, torch's
layers (``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer``, ``nn.TransformerDecoderLayer``)
and Hugging Face's ``BertLayer`` in xattn_ref's calling conventions, and a minimal
x-transformers-style cross-attention layer around any kernel. Each is a target:
``xattn-check 'xattn_ref.zoo.adapters:NAME()'``. Mask conventions: :mod:`xattn_ref.conventions`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xattn_ref.conventions import padding_from_allowed
from xattn_ref.errors import NotTaken, XattnArgumentError
from xattn_ref.guard import safe_sdpa

__all__ = [
    "SDPA_BACKENDS",
    "CrossAttention",
    "cross_attention_layer",
    "decoder_layer",
    "flex_attention_kernel",
    "flex_paged_kernel",
    "flex_window_kernel",
    "hf_bert_layer",
    "multihead_attention_layer",
    "sdpa",
    "sdpa_cudnn",
    "sdpa_efficient",
    "sdpa_flash",
    "sdpa_math",
    "self_attention_layer",
    "transformer_encoder_layer",
]


def flex_attention_kernel(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float | None = None
) -> torch.Tensor:
    """``torch.nn.attention.flex_attention`` as a kernel: the bool mask (True = may attend) becomes
    a ``mask_mod`` and a ``BlockMask``. On the CPU FlexAttention has no backward: run it with
    ``--forward-only`` there. Rows with no allowed key give zeros (FlexAttention's policy)."""
    return _flex(q, k, v, [] if mask is None else [_mask_mod(q, k, mask)], scale)


def flex_window_kernel(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    window_size: tuple[int, int] = (-1, -1),
) -> torch.Tensor:
    """A sliding window in ``torch.nn.attention.flex_attention`` as its users write one: a
    ``mask_mod`` on the indices (bottom-right aligned, flash-attention's ``window_size``, -1
    unbounded) and-ed with the padding's. Run it with ``--window --forward-only`` on the CPU."""
    left, right = window_size
    offset = k.shape[2] - q.shape[2]

    def window(bi: Any, hi: Any, qi: Any, ki: Any) -> Any:
        near = ki <= qi + offset + right if right >= 0 else ki >= 0
        return near & (ki >= qi + offset - left) if left >= 0 else near

    return _flex(q, k, v, [window] if mask is None else [window, _mask_mod(q, k, mask)])


def flex_paged_kernel(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    seqlens_k: torch.Tensor,
) -> torch.Tensor:
    """torch's paged FlexAttention (``torch.nn.attention.experimental._paged_attention``) in the
    paged kind's convention: the gate's block table becomes its page table (and the inverse map
    it keeps per sequence), the cache its physical ``(1, H_kv, pages * page_size, D)`` buffers,
    and a ``BlockMask`` over each sequence's logical keys (causal at the end of its
    ``seqlens_k``, blocks of one page) is converted to physical pages, as its users write it.
    Run it with ``--kind paged``; on the CPU FlexAttention is eager and unfused (slow)."""
    from torch.nn.attention.experimental._paged_attention import PagedAttention
    from torch.nn.attention.flex_attention import create_block_mask

    b, lq = q.shape[0], q.shape[1]
    pages, size, hkv = k_cache.shape[0], k_cache.shape[1], k_cache.shape[2]
    lens = seqlens_k.long()
    paged = PagedAttention(pages, size, b, device=str(q.device))
    for n in range(b):
        used = -(-int(lens[n]) // size)
        table = block_table[n, :used].long()
        paged.page_table[n, :used] = table
        paged.physical_to_logical[n, table] = torch.arange(used, device=q.device)
        paged.capacity[n] = used * size

    def causal_at_the_end(bi: Any, hi: Any, qi: Any, ki: Any) -> Any:
        return (ki <= qi + lens[bi] - lq) & (ki < lens[bi])

    width, device = block_table.shape[1] * size, str(q.device)  # logical keys: the table's blocks
    logical = create_block_mask(causal_at_the_end, b, None, lq, width, device=device, BLOCK_SIZE=(128, size))
    physical = paged.convert_logical_block_mask(logical, kv_len=lens)
    k, v = (c.permute(2, 0, 1, 3).reshape(1, hkv, pages * size, c.shape[-1]) for c in (k_cache, v_cache))
    return _flex_call(q.transpose(1, 2), k, v, physical, None).transpose(1, 2)


def _mask_mod(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor) -> Any:
    """The bool mask (True = may attend) as a FlexAttention ``mask_mod``."""
    allowed = mask.expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])

    def mask_mod(bi: Any, hi: Any, qi: Any, ki: Any) -> Any:
        return allowed[bi, hi, qi, ki]

    return mask_mod


def _flex(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mods: list[Any], scale: float | None = None
) -> torch.Tensor:
    """``flex_attention`` with the ``BlockMask`` of the and of ``mods`` (none: no mask)."""
    from torch.nn.attention.flex_attention import and_masks, create_block_mask

    b, h, lq, lk = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
    block_mask = create_block_mask(and_masks(*mods), b, h, lq, lk, device=str(q.device)) if mods else None
    return _flex_call(q, k, v, block_mask, scale)


def _flex_call(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: Any, scale: float | None
) -> torch.Tensor:
    """``flex_attention`` (grouped kv heads where k has fewer), without the warning eager
    FlexAttention gives that it is not compiled."""
    from torch.nn.attention.flex_attention import flex_attention

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = flex_attention(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=k.shape[1] != q.shape[1])
    assert isinstance(out, torch.Tensor)
    return out


class _PaddedSelfAttention(nn.Module):
    """``fn(x, mask)`` (True = a real token) around a module that takes ``True = padding``."""

    def __init__(self, inner: nn.Module, call: str) -> None:
        super().__init__()
        self.inner, self.call = inner, call

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        padding = padding_from_allowed(mask)
        if self.call == "encoder":
            out: torch.Tensor = self.inner(x, src_key_padding_mask=padding)
            return out
        y, _ = self.inner(x, x, x, key_padding_mask=padding, need_weights=False)
        return y  # type: ignore[no-any-return]


def transformer_encoder_layer(dim: int = 16, num_heads: int = 2, *, seed: int = 0) -> nn.Module:
    """``nn.TransformerEncoderLayer(dim, num_heads, 2 dim, dropout=0, batch_first=True)`` as a
    self-attention layer ``fn(x, mask)`` (``--kind encoder``): ``src_key_padding_mask = ~mask``."""
    torch.manual_seed(seed)
    layer = nn.TransformerEncoderLayer(dim, num_heads, 2 * dim, dropout=0.0, batch_first=True)
    return _PaddedSelfAttention(layer, "encoder").eval()


def self_attention_layer(dim: int = 16, num_heads: int = 2, *, seed: int = 0) -> nn.Module:
    """``nn.MultiheadAttention(dim, num_heads, batch_first=True)`` as self-attention
    ``fn(x, mask)`` (``--kind encoder``): ``mha(x, x, x, key_padding_mask=~mask)``."""
    torch.manual_seed(seed)
    return _PaddedSelfAttention(nn.MultiheadAttention(dim, num_heads, batch_first=True), "mha").eval()


def hf_bert_layer(
    dim: int = 16, num_heads: int = 2, *, attn_implementation: str = "sdpa", seed: int = 0
) -> nn.Module:
    """A Hugging Face ``BertLayer`` built from a config (never downloaded) as a self-attention
    layer ``fn(x, mask)`` (``--kind encoder``), with the mask built as BERT builds it:
    ``(B, 1, 1, L)``, ``0`` for real tokens and ``finfo(dtype).min`` for padding."""
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertLayer

    torch.manual_seed(seed)
    config = BertConfig(
        hidden_size=dim,
        num_attention_heads=num_heads,
        intermediate_size=2 * dim,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    config._attn_implementation = attn_implementation
    return _HFEncoder(BertLayer(config)).eval()  # type: ignore[no-untyped-call]


class _HFEncoder(nn.Module):
    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        extended = torch.zeros(mask.shape[0], 1, 1, mask.shape[1], dtype=x.dtype, device=x.device)
        extended = extended.masked_fill(~mask[:, None, None, :], torch.finfo(x.dtype).min)
        out = self.layer(x, attention_mask=extended)
        return out[0] if isinstance(out, tuple) else out  # type: ignore[no-any-return]


#: backend name -> torch.nn.attention.SDPBackend member name
SDPA_BACKENDS = {
    "math": "MATH",
    "flash": "FLASH_ATTENTION",
    "efficient": "EFFICIENT_ATTENTION",
    "cudnn": "CUDNN_ATTENTION",
}


#: What torch raises when the backends allowed cannot take an input (CUDA; CPU)
_NO_KERNEL = ("No available kernel", "No viable backend")


def sdpa(backend: str | None = None) -> Callable[..., torch.Tensor]:
    """A kernel target for ``scaled_dot_product_attention``, on one backend if named
    (``math``, ``flash``, ``efficient``, ``cudnn``; default: torch's choice).

    The kernel is ``fn(q, k, v, mask, **kwargs)``: the mask is SDPA's ``attn_mask`` (bool,
    **True = may attend**, or a float mask), and the dialect's keywords (``is_causal``,
    ``scale``) pass through; ``enable_gqa`` is set when k has fewer heads than q. Where the
    named backend does not take a case (torch finds no kernel: flash takes no ``attn_mask``
    and no float64, cuDNN only some shapes), the kernel raises
    :class:`~xattn_ref.errors.NotTaken`: the example is left out and counted, and a property
    no example exercised is not-applicable (give flash ``--mask none`` so that it is
    exercised). Named ones: ``sdpa_math``, ``sdpa_flash``, ``sdpa_efficient``,
    ``sdpa_cudnn``::

        xattn-check xattn_ref.zoo.adapters:sdpa_efficient --device cuda --dtype float16
    """
    if backend is not None and backend not in SDPA_BACKENDS:
        raise XattnArgumentError(
            f"backend must be one of {', '.join(SDPA_BACKENDS)} or None, got {backend!r}"
        )

    def kernel(
        q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, **kwargs: Any
    ) -> torch.Tensor:
        if k.shape[-3] != q.shape[-3]:
            kwargs["enable_gqa"] = True
        context: Any = nullcontext()
        if backend is not None:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            context = sdpa_kernel(getattr(SDPBackend, SDPA_BACKENDS[backend]))
        try:
            with context:
                return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **kwargs)
        except RuntimeError as exc:
            if backend is None or not any(m in str(exc) for m in _NO_KERNEL):
                raise
            raise NotTaken(
                f"SDPA's {backend} backend takes no such input: {str(exc).splitlines()[0]}"
            ) from None

    kernel.__name__ = kernel.__qualname__ = f"sdpa_{backend or 'default'}"
    return kernel


#: SDPA on one backend each (NotTaken where torch finds no kernel of that backend for a case)
sdpa_math = sdpa("math")
sdpa_flash = sdpa("flash")
sdpa_efficient = sdpa("efficient")
sdpa_cudnn = sdpa("cudnn")


class _MHALayer(nn.Module):
    """``nn.MultiheadAttention`` as a layer target ``(x, context, context_mask) -> y``."""

    def __init__(self, mha: nn.MultiheadAttention, need_weights: bool | None) -> None:
        super().__init__()
        self.mha = mha
        self.need_weights = need_weights

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        if not self.mha.batch_first:
            x, context = x.transpose(0, 1), context.transpose(0, 1)
        kwargs = {} if self.need_weights is None else {"need_weights": self.need_weights}
        y: torch.Tensor = self.mha(
            x, context, context, key_padding_mask=padding_from_allowed(context_mask), **kwargs
        )[0]
        return y if self.mha.batch_first else y.transpose(0, 1)


def multihead_attention_layer(
    dim: int = 16,
    num_heads: int = 2,
    *,
    need_weights: bool | None = None,
    kdim: int | None = None,
    seed: int = 0,
) -> nn.Module:
    """A seeded ``nn.MultiheadAttention(dim, num_heads, batch_first=True)`` as a layer target.

    ``need_weights=None`` calls it as most code does (the default, ``need_weights=True``); on
    torch 2.13 that path returns NaN for a context that is entirely padding, while
    ``need_weights=False`` takes SDPA's guarded path.
    """
    torch.manual_seed(seed)
    mha = nn.MultiheadAttention(dim, num_heads, batch_first=True, kdim=kdim, vdim=kdim)
    return _MHALayer(mha, need_weights)


class _DecoderLayer(nn.Module):
    def __init__(self, layer: nn.TransformerDecoderLayer) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.layer(x, context, memory_key_padding_mask=padding_from_allowed(context_mask))
        return y


def decoder_layer(dim: int = 16, num_heads: int = 2, *, seed: int = 0) -> nn.Module:
    """A seeded ``nn.TransformerDecoderLayer(dim, num_heads, batch_first=True, dropout=0)`` as a
    layer target (its cross-attention gets ``memory_key_padding_mask``)."""
    torch.manual_seed(seed)
    return _DecoderLayer(
        nn.TransformerDecoderLayer(dim, num_heads, dim_feedforward=2 * dim, dropout=0.0, batch_first=True)
    )


class CrossAttention(nn.Module):
    """A minimal x-transformers-style cross-attention layer around any kernel.

    ``forward(x, context, context_mask)``: x ``(B, Lq, E)``, context ``(B, Lk, E_ctx)``,
    ``context_mask`` ``(B, Lk)`` True = real token; the kernel gets SDPA's layout and a
    ``(B, 1, 1, Lk)`` bool mask, True = may attend.
    """

    def __init__(
        self, kernel: Callable[..., torch.Tensor], dim: int, context_dim: int | None = None, heads: int = 2
    ) -> None:
        super().__init__()
        if dim % heads:
            raise XattnArgumentError(f"dim={dim} must be divisible by heads={heads}")
        context_dim = context_dim or dim
        self.kernel, self.heads = kernel, heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(context_dim, 2 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        b, lq, e = x.shape
        h = self.heads
        q = self.to_q(x).view(b, lq, h, e // h).transpose(1, 2)
        k, v = (t.view(b, -1, h, e // h).transpose(1, 2) for t in self.to_kv(context).chunk(2, dim=-1))
        out = self.kernel(q, k, v, context_mask[:, None, None, :])
        out = out.transpose(1, 2).reshape(b, lq, e)
        y: torch.Tensor = self.to_out(out)
        return y


def cross_attention_layer(
    kernel: Callable[..., torch.Tensor] | None = None,
    dim: int = 16,
    context_dim: int | None = None,
    heads: int = 2,
    *,
    seed: int = 0,
) -> nn.Module:
    """A seeded :class:`CrossAttention` (default kernel: :func:`xattn_ref.guard.safe_sdpa`)."""
    if kernel is None:
        def kernel(
            q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
        ) -> torch.Tensor:
            return safe_sdpa(q, k, v, attn_mask=mask)

    torch.manual_seed(seed)
    return CrossAttention(kernel, dim, context_dim, heads)
