"""Calling a target on a case: output validation, gradients, cotangents, words for positions.

The same for every kind of target: a *call* (:class:`Call`, made by the target's kind in
:mod:`xattn_ref.kinds`) turns a case into the target's output and knows its tolerance budget.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

from xattn_ref.errors import NotTaken, TargetError, XattnArgumentError

if TYPE_CHECKING:  # typing only: the tolerance model calls back into this module
    from xattn_ref.tolerance import Budget

__all__ = [
    "Call",
    "check_output",
    "cotangent",
    "first_nonfinite",
    "forward_backward",
    "index_str",
    "invoke",
    "vjp",
]


class Call(Protocol):
    """A target bound to its kind: ``call(case) -> output`` (validated), its trainable
    parameters for a case's dtype and device, and the tolerance budget of a case."""

    differentiable: bool
    empty_rows: str  # the empty-row policy: "zero" or "finite"

    def __call__(self, case: Any) -> torch.Tensor: ...
    def arguments(self, case: Any) -> tuple[dict[str, Any], dict[str, Any]]: ...
    def run(self, case: Any, args: dict[str, Any], kwargs: dict[str, Any]) -> torch.Tensor: ...
    def parameters(self, case: Any) -> dict[str, torch.Tensor]: ...
    def budget(self, case: Any, g: torch.Tensor, *, grads: bool) -> Budget: ...


@runtime_checkable
class ModelCalls(Protocol):
    """What a whole model's call (the ``model`` kind's :class:`~xattn_ref.kinds.ModelCall`)
    offers the model properties beyond :class:`Call`: the padding sides it takes, its cached
    decoding, and its attention implementations."""

    sides: tuple[str, ...]

    def decode(self, case: Any) -> torch.Tensor: ...
    def implementations(self, case: Any) -> tuple[str, ...]: ...
    def implementation(self, case: Any, name: str) -> AbstractContextManager[None]: ...


def model_call(call: Call, prop: str) -> ModelCalls:
    """``call`` as a model's call, for property ``prop``; a one-line error when it is another
    kind's (the property is the model kind's)."""
    if not isinstance(call, ModelCalls):
        raise XattnArgumentError(f"{prop} checks a whole model (--kind model), got a {type(call).__name__}")
    return call


def index_str(name: str, index: tuple[int, ...]) -> str:
    return f"{name}[{', '.join(str(int(i)) for i in index)}]"


def first_nonfinite(t: torch.Tensor) -> tuple[int, ...] | None:
    bad = ~t.detach().isfinite()
    if not bool(bad.any()):
        return None
    return tuple(int(i) for i in bad.nonzero()[0])


def invoke(fn: Callable[..., Any], args: dict[str, Any], kwargs: dict[str, Any] | None = None) -> Any:
    """``fn(*args.values(), **kwargs)``; anything it raises becomes a :class:`TargetError` naming
    the inputs."""
    kwargs = kwargs or {}
    try:
        return fn(*args.values(), **kwargs)
    except NotTaken:  # outside the target's documented limits: the example is left out
        raise
    except Exception as exc:  # the target's own failure, reported as such
        shapes = ", ".join(
            f"{n} {tuple(t.shape) if isinstance(t, torch.Tensor) else _short(t)}"
            + (f" {t.dtype}" if isinstance(t, torch.Tensor) and n == "mask" else "")
            for n, t in args.items()
        )
        shapes += "".join(f", {n}={t!r}" for n, t in kwargs.items())
        first = next(t for t in args.values() if isinstance(t, torch.Tensor))
        raise TargetError(
            f"the target raised {type(exc).__name__}: {exc} (on {shapes}, {first.dtype}, {first.device})"
        ) from exc


def _short(value: Any) -> str:
    """A value for an error message: itself if short, else its type."""
    text = repr(value)
    return text if len(text) <= 40 else f"<{type(value).__name__}>"


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


def cotangent(case: Any, shape: tuple[int, ...], rows: torch.Tensor | None = None) -> torch.Tensor:
    """A seeded random ``d loss / d output`` of ``shape``; zero outside ``rows`` (bool, the
    output's shape without its last dim) if given."""
    gen = torch.Generator().manual_seed(case.seed + 1)
    g = torch.randn(shape, generator=gen, dtype=torch.float64)
    if rows is not None:
        g = g * rows.to("cpu").unsqueeze(-1)
    return g.to(dtype=case.dtype, device=case.device)


_BACKWARD_HINT = (
    " (a target that takes gradients only through out.backward(), such as reentrant checkpointing, "
    "is declared with --backward)"
)


def vjp(out: torch.Tensor, wrt: Sequence[torch.Tensor], g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    """``torch.autograd.grad(out, wrt, grad_outputs=g, allow_unused=True)``, taken as the gradient
    of ``sum(out * g)``: its gradient with respect to ``out`` is ``1 * g``, exactly ``g`` in every
    dtype, so the target's backward receives the same cotangent. Passing ``g`` as
    ``grad_outputs`` makes torch import sympy (``torch.fx.experimental.symbolic_shapes``) at the
    first call, 0.3 s in every process."""
    return torch.autograd.grad(_weighted_sum(out, g), wrt, allow_unused=True)


def _weighted_sum(out: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    if out.shape != g.shape:
        raise RuntimeError(f"the output's shape {tuple(out.shape)} is not the cotangent's {tuple(g.shape)}")
    return (out * g).sum()


def _grad(out: torch.Tensor, wrt: list[torch.Tensor], g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    return vjp(out, wrt, g)


def _backward(out: torch.Tensor, wrt: list[torch.Tensor], g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    """The gradients through ``out.backward(g)``, as a training step takes them: every ``.grad``
    is cleared before and after, so nothing accumulates in the target's parameters."""
    kept = [t.grad for t in wrt]
    for t in wrt:
        t.grad = None
    try:
        torch.autograd.backward(_weighted_sum(out, g))  # torch.autograd.backward(out, g), as vjp takes it
        return tuple(t.grad for t in wrt)
    finally:
        for t, grad in zip(wrt, kept):
            t.grad = grad


def forward_backward(
    call: Call, case: Any, g: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The output and the gradients for the cotangent ``g`` (default: seeded random) of every
    float input (``dq``, ``dk``, ``dv``; ``dx``, ``dcontext``) and trainable parameter."""
    leaves = {n: t.detach().clone().requires_grad_(True) for n, t in case.inputs().items()}
    out = call(case.replace(**leaves))
    g = cotangent(case, tuple(out.shape)) if g is None else g
    params = call.parameters(case)
    wrt = [*leaves.values(), *params.values()]
    names = [f"d{n}" for n in leaves] + [f"d({n})" for n in params]
    if not out.requires_grad:
        if not bool((out == 0).all()):
            raise TargetError(
                "the target's output does not require grad on this input: it is not differentiable "
                "here (declare an inference-only target forward-only)"
            )
        # a constant output (zeros a kernel started from, for sequences with no key): its gradient
        # is zero, which the properties judge against the truth's
        return out.detach(), {n: torch.zeros_like(x) for n, x in zip(names, wrt)}
    try:
        grads = _backward(out, wrt, g) if getattr(call, "backward", False) else _grad(out, wrt, g)
    except NotTaken:
        raise
    except Exception as exc:
        hint = "" if getattr(call, "backward", False) else _BACKWARD_HINT
        raise TargetError(f"the target's backward pass raised {type(exc).__name__}: {exc}{hint}") from exc
    return out.detach(), {n: torch.zeros_like(x) if gr is None else gr for n, gr, x in zip(names, grads, wrt)}
