"""x-transformers' attention as xattn_ref kernel targets (``pip install x-transformers``):

    xattn-check examples/real/x_transformers_targets.py:attend            # einsum path
    xattn-check examples/real/x_transformers_targets.py:attend_flash      # its SDPA path

``Attend(q, k, v, mask)`` takes SDPA's layout and a bool mask, True = may attend, as the kernel
kind does, but reads a 2-D mask as ``(B, Lk)`` key padding: masks are handed over 4-D. It returns
``(out, intermediates)``.
"""

from __future__ import annotations

import torch
from x_transformers.attend import Attend

_EINSUM = Attend()
_FLASH = Attend(flash=True)


def _four_d(mask: torch.Tensor | None) -> torch.Tensor | None:
    return None if mask is None else mask.reshape((1,) * (4 - mask.ndim) + tuple(mask.shape))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    out, _ = _EINSUM(q, k, v, mask=_four_d(mask))
    return out


def attend_flash(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    out, _ = _FLASH(q, k, v, mask=_four_d(mask))
    return out
