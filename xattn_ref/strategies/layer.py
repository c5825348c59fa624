"""Layer cases: ``layer_cases`` (``fn(x, context, context_mask)``) and ``encoder_cases``
(``fn(x, mask)``), masks ``(B, L)`` with **True = a real token**."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from hypothesis import strategies as st

from xattn_ref._args import check_choices as _check_choices
from xattn_ref._args import check_int as _check_int
from xattn_ref._devices import ALL_DTYPES
from xattn_ref.cases import (
    MASK_PATTERNS,
    AttentionCase,
    EncoderCase,
    EncoderCaseSpec,
    LayerCase,
    LayerCaseSpec,
    MaskSpec,
)
from xattn_ref.strategies._base import _choice, _ints, lazy
from xattn_ref.strategies.kernel import _check_devices, _check_stds, attention_cases
from xattn_ref.strategies.masks import _draw_mask, _Length, mask_specs

__all__ = [
    "encoder_cases",
    "layer_cases",
]

#: Key-padding patterns for layer contexts (``causal`` needs query rows, which a context lacks).
LAYER_PATTERNS: tuple[str, ...] = tuple(p for p in MASK_PATTERNS if p != "causal")


@lazy
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

    e = _check_int("dim", dim, 1)
    ec = e if context_dim is None else _check_int("context_dim", context_dim, 1)
    dts = _check_choices("dtypes", dtypes, ALL_DTYPES)
    devs = _check_devices(devices)
    b_max = _check_int("max_batch_size", max_batch_size, 1)
    lq_max = _check_int("max_q_len", max_q_len, 1)
    lk_max = _check_int("max_kv_len", max_kv_len, 1)
    sizes = _check_stds("stds", stds)
    return _layer_cases(e, ec, dts, devs, b_max, lq_max, (min(8, lk_max), lk_max), sizes)


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


@lazy
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

    e = _check_int("dim", dim, 1)
    dts = _check_choices("dtypes", dtypes, ALL_DTYPES)
    devs = _check_devices(devices)
    b_max = _check_int("max_batch_size", max_batch_size, 1)
    l_max = _check_int("max_length", max_length, 1)
    sizes = _check_stds("stds", stds)
    return _encoder_cases(e, dts, devs, b_max, l_max, sizes)


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
