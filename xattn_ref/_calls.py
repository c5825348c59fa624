"""Calling a kernel under test: output validation, gradients, and words for tensor positions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from xattn_ref._kernel import guarded_attention
from xattn_ref._spec import AttentionCase
from xattn_ref.reference import default_scale

__all__ = [
    "Kernel",
    "TargetError",
    "call_kernel",
    "check_output",
    "cotangent",
    "describe_key",
    "describe_row",
    "forward_backward",
    "plain_forward_backward",
    "index_str",
]

#: A kernel-kind target: ``fn(q, k, v, mask) -> out`` in SDPA's layout, mask True = may attend.
Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, "torch.Tensor | None"], Any]

Grads = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class TargetError(Exception):
    """The target cannot be tested: it raised on a valid input or returned the wrong thing."""


def index_str(name: str, index: tuple[int, ...]) -> str:
    return f"{name}[{', '.join(str(int(i)) for i in index)}]"


def call_kernel(
    kernel: Kernel,
    case: AttentionCase,
    q: torch.Tensor | None = None,
    k: torch.Tensor | None = None,
    v: torch.Tensor | None = None,
    mask: torch.Tensor | str | None = "case",
) -> torch.Tensor:
    """``kernel(q, k, v, mask)`` (the case's own tensors by default), with its output checked."""
    q = case.q if q is None else q
    k = case.k if k is None else k
    v = case.v if v is None else v
    m = case.mask if isinstance(mask, str) else mask
    try:
        out = kernel(q, k, v, m)
    except Exception as exc:  # the target's own failure, reported as such
        raise TargetError(
            f"the target raised {type(exc).__name__}: {exc} "
            f"(on q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, "
            f"mask {None if m is None else tuple(m.shape)}, {q.dtype}, {q.device})"
        ) from exc
    expected = (q.shape[0], q.shape[1], q.shape[2], v.shape[-1])
    return check_output(out, q, lambda t: tuple(t.shape) == expected, f"(B, H, Lq, Dv) = {expected}")


def check_output(
    out: object, like: torch.Tensor, shape_ok: Callable[[torch.Tensor], bool], expected: str
) -> torch.Tensor:
    """``out`` if it is a tensor of the expected shape with ``like``'s dtype and device, else
    :class:`TargetError` saying what was returned and what was expected."""
    if not isinstance(out, torch.Tensor):
        raise TargetError(f"the target returned {type(out).__name__}; expected a torch.Tensor {expected}")
    if not shape_ok(out):
        raise TargetError(f"the target returned shape {tuple(out.shape)}; expected {expected}")
    if out.dtype != like.dtype:
        raise TargetError(f"the target returned dtype {out.dtype}; expected the input dtype {like.dtype}")
    if out.device != like.device:
        raise TargetError(f"the target returned a tensor on {out.device}; expected {like.device}")
    return out


def cotangent(case: AttentionCase, rows: torch.Tensor | None = None) -> torch.Tensor:
    """A seeded random ``d loss / d out``; zero outside ``rows`` (bool ``(B, H, Lq)``) if given."""
    b, h, lq, _ = case.q.shape
    gen = torch.Generator().manual_seed(case.spec.seed + 1)
    g = torch.randn(b, h, lq, case.v.shape[-1], generator=gen, dtype=torch.float64)
    if rows is not None:
        g = g * rows.to("cpu").unsqueeze(-1)
    return g.to(dtype=case.dtype, device=case.device)


def _leaves(case: AttentionCase) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return tuple(t.detach().clone().requires_grad_(True) for t in (case.q, case.k, case.v))  # type: ignore[return-value]


def _grads(out: torch.Tensor, leaves: tuple[torch.Tensor, ...], g: torch.Tensor) -> Grads:
    if not out.requires_grad:
        raise TargetError(
            "the target's output does not require grad: it is not differentiable "
            "(skip the gradient properties for inference-only targets)"
        )
    grads = torch.autograd.grad(out, leaves, grad_outputs=g, allow_unused=True)
    return tuple(torch.zeros_like(x) if gr is None else gr for gr, x in zip(grads, leaves))  # type: ignore[return-value]


def forward_backward(
    kernel: Kernel, case: AttentionCase, g: torch.Tensor | None = None
) -> tuple[torch.Tensor, Grads]:
    """The kernel's output and ``(dq, dk, dv)`` for the cotangent ``g`` (default: seeded random)."""
    leaves = _leaves(case)
    out = call_kernel(kernel, case, *leaves)
    g = cotangent(case) if g is None else g
    try:
        grads = _grads(out, leaves, g)
    except TargetError:
        raise
    except Exception as exc:
        raise TargetError(f"the target's backward pass raised {type(exc).__name__}: {exc}") from exc
    return out.detach(), grads


def plain_forward_backward(
    case: AttentionCase, g: torch.Tensor | None
) -> tuple[torch.Tensor, Grads | tuple[()]]:
    """The guarded attention computed in the case's own dtype, with gradients for ``g`` if given."""
    q, k, v = (t.detach().clone().requires_grad_(g is not None) for t in (case.q, case.k, case.v))
    out = guarded_attention(q, k, v, case.mask, default_scale(case.q.shape[-1]), case.dtype)
    if g is None:
        return out.detach(), ()
    grads = torch.autograd.grad(out, (q, k, v), grad_outputs=g)
    return out.detach(), grads  # type: ignore[return-value]


def describe_row(case: AttentionCase, b: int, h: int, i: int) -> str:
    """Words for query row (b, h, i) of the mask."""
    row = case.full_mask[b, h, i]
    n, total = int(row.sum()), row.numel()
    if case.mask is None:
        return f"mask None (row [{b}, {h}, {i}] allows all {total} keys)"
    if n == 0:
        return f"mask row [{b}, {h}, {i}] allows no key"
    return f"mask row [{b}, {h}, {i}] allows {n} of {total} keys"


def describe_key(case: AttentionCase, b: int, h: int, j: int) -> str:
    """Words for key j of (b, h): how many query rows may attend to it."""
    column = case.full_mask[b, h, :, j]
    n = int(column.sum())
    if n == 0:
        return f"key [{b}, {h}, {j}] is masked for every query"
    return f"key [{b}, {h}, {j}] is allowed for {n} of {column.numel()} queries"
