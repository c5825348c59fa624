"""Make any attention function safe for rows with no allowed key.

``guard(fn)`` wraps a kernel ``fn(q, k, v, mask, ...)`` so that every query row whose mask
allows no key outputs exactly zero and contributes exactly zero (finite) gradient, whatever
``fn`` does on such rows (NaN from a ``-inf`` softmax, an average of the padding from a finite
fill). ``safe_sdpa`` is ``scaled_dot_product_attention`` behind the guard.

How: the guard finds the empty rows, hands ``fn`` a *new* mask in which those rows may attend
to their first key only (so ``fn`` computes an ordinary, finite softmax there, a one-hot, and
the mask stays as sparse as it was: kernels that skip masked blocks still skip them), and
overwrites those rows of the output with zeros. The zeros stop the gradient: the rows'
cotangent is zero, so their (finite) backward contributes exactly nothing. The caller's mask
is never written to.

Masks, **True = may attend** for bool masks:

- ``None``: no guard needed; ``fn`` is called as is (no extra work).
- bool, broadcastable to ``(B, H, Lq, Lk)``;
- additive float (``0`` = attend, ``-inf`` = masked, finite values = biases): an entry at or
  below :data:`MASKED_AT` (``-1e4``) is a *sentinel*, a masked key, as Hugging Face
  (``finfo(dtype).min``) and older code (``-1e4``, ``-1e9``) write them. The guard hands ``fn``
  a new mask with every sentinel replaced by ``-inf`` (so no logit below the sentinel and no
  ``finfo.min + logit`` overflow can make a masked key win), and a row is empty when every
  entry is masked. Biases above ``-1e4`` stay as they are.

Device-to-host syncs: the default (``sync=False``) never syncs and always applies the
guard: a few small ops on the mask and one on the output. ``sync=True`` first asks
the device whether any row is empty (one sync: ``bool(tensor)``) and calls ``fn`` untouched
when none is, which saves the two ops but costs a pipeline stall on CUDA. Under
``torch.compile`` the guard is always sync-free (no graph break).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, overload

import torch
import torch.nn.functional as F

from xattn_ref.errors import XattnArgumentError

__all__ = ["MASKED_AT", "guard", "guard_mask", "safe_sdpa"]

#: An additive-mask entry at or below this value is a masked key (a sentinel such as
#: ``finfo(dtype).min``, ``-1e4`` or ``-1e9``), not a bias: ``exp(-1e4)`` is 0 in every dtype.
MASKED_AT = -1e4

Fn = TypeVar("Fn", bound=Callable[..., torch.Tensor])


def guard_mask(mask: torch.Tensor, *, name: str = "mask") -> tuple[torch.Tensor, torch.Tensor]:
    """``(safe_mask, empty)``: a new mask in which empty rows may attend to their first key, and the
    bool ``(..., Lq, 1)`` tensor of empty rows (to zero the output with ``masked_fill``)."""
    if not isinstance(mask, torch.Tensor):
        raise XattnArgumentError(
            f"{name} must be None, a bool tensor (True = may attend) or an additive float mask, "
            f"got {type(mask).__name__}"
        )
    if mask.ndim == 0:
        raise XattnArgumentError(f"{name} must have a key dimension (..., Lq, Lk), got a 0-d tensor")
    if mask.dtype == torch.bool:
        empty = ~mask.any(-1, keepdim=True)
        safe = mask.clone()  # never the caller's tensor
        safe[..., :1] |= empty
        return safe, empty
    if mask.is_floating_point():
        masked = mask <= MASKED_AT
        empty = masked.all(-1, keepdim=True)
        safe = mask.masked_fill(masked, float("-inf"))  # a new tensor: sentinels become -inf
        safe[..., :1] = safe[..., :1].masked_fill(empty, 0.0)
        return safe, empty
    raise XattnArgumentError(
        f"{name} must be bool (True = may attend) or floating point (additive, -inf = masked), "
        f"got dtype {mask.dtype}"
    )


def _compiling() -> bool:
    return bool(torch.compiler.is_compiling())


@overload
def guard(fn: Fn, *, sync: bool = False) -> Fn: ...
@overload
def guard(fn: None = None, *, sync: bool = False) -> Callable[[Fn], Fn]: ...
def guard(fn: Fn | None = None, *, sync: bool = False) -> Fn | Callable[[Fn], Fn]:
    """Wrap a kernel ``fn(q, k, v, mask, *args, **kwargs) -> out`` so rows with no allowed key
    give exactly zero output and exactly zero, finite gradients.

    - ``fn``: the kernel; ``out`` must be ``(..., Lq, Dv)`` with the mask's ``(..., Lq)`` rows.
      Extra arguments are passed through.
    - ``sync``: if True, skip the guard's work when no row is empty, at the price of one
      device-to-host sync per call (see the module docstring). Default False: never syncs.

    Use it as ``guard(fn)``, ``@guard`` or ``@guard(sync=True)``::

        @guard
        def attend(q, k, v, mask):
            s = (q @ k.transpose(-2, -1)).masked_fill(~mask, float("-inf"))
            return s.softmax(-1) @ v          # NaN on empty rows, but not once guarded

    The caller's mask is never modified; dtype and device are those ``fn`` returns.
    """
    if fn is None:
        return functools.partial(guard, sync=sync)  # type: ignore[return-value]
    if not callable(fn):
        raise XattnArgumentError(f"fn must be callable, got {type(fn).__name__}")
    if not isinstance(sync, bool):
        raise XattnArgumentError(f"sync must be True or False, got {sync!r}")

    @functools.wraps(fn)
    def guarded(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        if mask is None:
            return fn(q, k, v, mask, *args, **kwargs)
        safe, empty = guard_mask(mask)
        if sync and not _compiling() and not bool(empty.any()):
            return fn(q, k, v, mask, *args, **kwargs)
        return fn(q, k, v, safe, *args, **kwargs).masked_fill(empty, 0.0)

    return guarded  # type: ignore[return-value]


def safe_sdpa(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    """``torch.nn.functional.scaled_dot_product_attention`` with the same signature, guarded:
    query rows whose ``attn_mask`` allows no key (bool: no True; float: every entry ``-inf`` or
    a sentinel at or below :data:`MASKED_AT`) output exactly zero and contribute exactly zero
    gradient; float sentinels are passed to SDPA as ``-inf``. Never syncs; works under
    ``torch.compile``. (``is_causal`` masks, top-left aligned, never leave a row empty.)
    """
    if attn_mask is None:
        return F.scaled_dot_product_attention(
            query, key, value, None, dropout_p, is_causal, scale=scale, enable_gqa=enable_gqa
        )
    safe, empty = guard_mask(attn_mask, name="attn_mask")
    out = F.scaled_dot_product_attention(
        query, key, value, safe, dropout_p, is_causal, scale=scale, enable_gqa=enable_gqa
    )
    if out.requires_grad:  # SDPA's backward may need its output as it was
        return out.masked_fill(empty, 0.0)
    return out.masked_fill_(empty, 0.0)  # a fresh tensor of SDPA's: zeroing in place saves a copy
