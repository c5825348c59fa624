"""A kind of target defined outside the package, as a user would add one: kernels in
flash-attn's layout, ``fn(q, k, v, mask) -> out`` with q ``(B, Lq, H, D)``, k and v
``(B, Lk, H_kv, D)``, out ``(B, Lq, H, Dv)``; mask as the kernel kind's, **True = may attend**.
This module and one entry in ``KINDS`` are all it takes (``tests/test_layout.py``)."""

from __future__ import annotations

from typing import Any

import torch

from xattn_ref._calls import check_output
from xattn_ref.cases import AttentionCase
from xattn_ref.kinds import KernelCall
from xattn_ref.kinds.base import FnFor
from xattn_ref.kinds.kernel import KernelKind

LAYOUT = ("q", "k", "v")


class BSHDCall(KernelCall):
    """The kernel call with q, k, v and the output in ``(B, L, H, D)``."""

    def run(self, case: AttentionCase, args: dict[str, Any], kwargs: dict[str, Any]) -> torch.Tensor:
        args = {n: t.transpose(1, 2) if n in LAYOUT else t for n, t in args.items()}
        out = self.produce(case, args, kwargs)
        expected = (case.q.shape[0], case.q.shape[2], case.q.shape[1], case.v.shape[-1])
        out = check_output(out, case.q, lambda t: tuple(t.shape) == expected, f"(B, Lq, H, Dv) = {expected}")
        return self.dialect.restore_heads(out.transpose(1, 2), case)


class BSHDKind(KernelKind):
    name = "bshd"
    signature = "fn(q, k, v, mask) -> out, all (B, L, H, D); mask bool, True = may attend"

    def make_call(self, fn_for: FnFor, options: dict[str, Any], differentiable: bool) -> BSHDCall:
        return BSHDCall(fn_for, dialect=self.dialect(options), differentiable=differentiable,
                        **self.call_settings(options))  # fmt: skip


def bshd_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """A correct kernel in this layout: SDPA, with empty rows set to zero."""
    from xattn_ref.guard import safe_sdpa

    return safe_sdpa(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask).transpose(1, 2)


def bshd_neg_inf_softmax(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """A known-bad one: softmax over -inf fills (NaN where a row allows no key)."""
    from xattn_ref.zoo.known_bad import neg_inf_softmax

    return neg_inf_softmax(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask).transpose(1, 2)
