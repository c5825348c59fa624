"""The ``kernel`` kind: ``fn(q, k, v, mask) -> out`` in SDPA's layout, q ``(B, H, Lq, D)``, k
``(B, H, Lk, D)``, v ``(B, H, Lk, Dv)``, out ``(B, H, Lq, Dv)``; mask None or bool broadcastable
to ``(B, H, Lq, Lk)``, **True = may attend**. How a kernel takes its arguments beyond that
(grouped kv heads, float masks, biases, ``scale=``, ``is_causal=True``, ...) is its
:class:`~xattn_ref.dialects.Dialect`, whose fields are this kind's options."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from xattn_ref.dialects import DIALECT_OPTIONS, Dialect
from xattn_ref.kinds.base import CALL_OPTIONS, KERNEL_PROPERTIES, FnFor, Kind, TargetCall, fixed

if TYPE_CHECKING:
    import torch
    from hypothesis import strategies as st

    from xattn_ref.cases import AttentionCase
    from xattn_ref.tolerance import Budget

__all__ = ["KernelCall", "KernelKind", "kernel_call"]


class KernelCall(TargetCall):
    """A kernel bound to its kind: ``call(case)`` runs ``fn(q, k, v, mask, **kw)`` as its
    dialect says and checks that the output is ``(B, H, Lq, Dv)`` in the inputs' dtype and
    device."""

    def __init__(
        self, fn_for: FnFor, *, dialect: Dialect | None = None, differentiable: bool = True, **settings: Any
    ) -> None:
        self.dialect = Dialect() if dialect is None else dialect
        super().__init__(fn_for, differentiable=differentiable and not self.dialect.forward_only, **settings)
        self.empty_rows = self.dialect.empty_rows

    def arguments(self, case: AttentionCase) -> tuple[dict[str, Any], dict[str, Any]]:
        """The positional (by name) and keyword arguments of the call, in the kernel's dialect."""
        return self.dialect.arguments(case)

    def __call__(self, case: AttentionCase) -> torch.Tensor:
        return self.run(case, *self.arguments(case))

    def snippet(self) -> str:
        """Python that calls the kernel ``fn`` on ``case`` as this call does."""
        return self.dialect.snippet()

    def run(self, case: AttentionCase, args: dict[str, Any], kwargs: dict[str, Any]) -> torch.Tensor:
        """The kernel on these arguments (made from ``case``), its output checked."""
        from xattn_ref._calls import check_output

        out = self.produce(case, args, kwargs)
        expected = self.dialect.output_shape(case)
        names = "(B, Lq, H, Dv)" if self.dialect.layout == "blhd" else "(B, H, Lq, Dv)"
        out = check_output(out, case.q, lambda t: tuple(t.shape) == expected, f"{names} = {expected}")
        return self.dialect.restore_heads(out, case)

    def parameters(self, case: AttentionCase) -> dict[str, torch.Tensor]:
        return {}

    def budget(self, case: AttentionCase, g: torch.Tensor, *, grads: bool) -> Budget:
        """The tolerance model's budget; a float64 case whose run computes in float32 (Hugging
        Face's eager softmax) is judged at float32's rounding unit
        (:func:`~xattn_ref.precision.float64_precision`)."""
        import torch

        from xattn_ref._calls import forward_backward
        from xattn_ref.precision import float64_precision
        from xattn_ref.tolerance import kernel_budget

        unit = None
        if case.dtype == torch.float64:
            _, unit = float64_precision(lambda: forward_backward(self, case, g) if grads else self(case))
        return kernel_budget(case, g, grads=grads, unit=unit)


class KernelKind(Kind):
    name = "kernel"
    signature = (
        "fn(q, k, v, mask) -> out in SDPA's layout; mask bool, True = may attend, or None (no mask, in one "
        "case in eight: --always-mask never passes None)"
    )
    properties = KERNEL_PROPERTIES
    options = (*DIALECT_OPTIONS, *CALL_OPTIONS)
    roles: ClassVar[tuple[str, ...]] = ("q", "k", "v", "mask")

    def required_roles(self, options: dict[str, Any]) -> tuple[str, ...]:
        return self.roles[:3] if options.get("mask") == "none" else self.roles

    def dialect(self, options: dict[str, Any]) -> Dialect:
        return Dialect.from_options(options)

    def make_call(self, fn_for: FnFor, options: dict[str, Any], differentiable: bool) -> KernelCall:
        return KernelCall(
            fn_for,
            dialect=self.dialect(options),
            differentiable=differentiable,
            **self.call_settings(options),
        )

    def cases(self, options: dict[str, Any], dtype: torch.dtype, device: str) -> st.SearchStrategy[Any]:
        return self.dialect(options).cases(dtype, device)

    def probe(self, options: dict[str, Any], dtype: torch.dtype, device: str) -> AttentionCase:
        return self.dialect(options).probe(dtype, device)

    def validate(self, options: dict[str, Any]) -> None:
        self.dialect(options)  # raises ValueError for options that do not go together
        super().validate(options)

    def describe(self, options: dict[str, Any]) -> str:
        return self.dialect(options).signature()


def kernel_call(
    fn: Callable[..., Any], *, dialect: Dialect | None = None, differentiable: bool = True
) -> KernelCall:
    """A kernel function as a call, to run the checks of :mod:`xattn_ref.checks` directly."""
    return KernelCall(fixed(fn), dialect=dialect, differentiable=differentiable)
