"""The ``layer`` kind: ``fn(x, context, context_mask) -> y`` (x-transformers' cross-attention
call): x ``(B, Lq, E)``, context ``(B, Lk, E_ctx)``, context_mask ``(B, Lk)`` bool, **True = a
real context token**; y ``(B, Lq, E_out)`` or a tuple whose first element is it. Layers have no
reference: they get the kernel properties but ``empty_rows_zero`` and ``reference_agreement``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from xattn_ref.kinds.base import (
    CALL_OPTIONS,
    DIM,
    FORWARD_ONLY,
    FnFor,
    Kind,
    TargetCall,
    fixed,
    key_padding_mask,
    trainable_parameters,
)
from xattn_ref.options import Option

if TYPE_CHECKING:
    import torch
    from hypothesis import strategies as st

    from xattn_ref.cases import LayerCase
    from xattn_ref.tolerance import Budget

__all__ = ["LAYER_PROPERTIES", "LayerCall", "LayerKind", "layer_call"]

#: the kernel's but empty_rows_zero and reference_agreement (a layer has no guarded reference), named
LAYER_PROPERTIES: tuple[str, ...] = (
    "finite_output",
    "finite_grad",
    "padding_invariance",
    "nan_padding_invariance",
    "compaction_equivalence",
    "batch_independence",
    "no_input_mutation",
    "dtype_consistency",
    "device_consistency",
)


class LayerCall(TargetCall):
    """A layer bound to its kind: ``call(case)`` runs ``fn(x, context, context_mask)``; gradients
    reach x, context and every trainable parameter. ``empty_rows="finite"``: a query whose
    context is all padding may give any finite output (the mean of the padding, as Hugging Face
    eager attention and T5 give); its value is not compared."""

    length_name = "Lq"  # how the output's length is named in errors

    def __init__(
        self,
        fn_for: FnFor,
        dim: int,
        context_dim: int,
        *,
        differentiable: bool = True,
        empty_rows: str = "zero",
        **settings: Any,
    ) -> None:
        super().__init__(fn_for, differentiable=differentiable, **settings)
        self.dim = dim
        self.context_dim = context_dim
        self.empty_rows = empty_rows

    def arguments(self, case: LayerCase) -> tuple[dict[str, Any], dict[str, Any]]:
        return dict(case.arguments()), {}

    def __call__(self, case: LayerCase) -> torch.Tensor:
        return self.run(case, *self.arguments(case))

    def run(self, case: LayerCase, args: dict[str, Any], kwargs: dict[str, Any]) -> torch.Tensor:
        from xattn_ref._calls import check_output

        y = self.produce(case, args, kwargs)
        lead = tuple(case.x.shape[:2])
        return check_output(
            y,
            case.x,
            lambda t: t.ndim == 3 and tuple(t.shape[:2]) == lead,
            f"(B, {self.length_name}, E_out) with (B, {self.length_name}) = {lead} (or a tuple whose first "
            "element is one)",
        )

    def parameters(self, case: LayerCase) -> dict[str, torch.Tensor]:
        return trainable_parameters(self.fn_for(case.dtype, str(case.device)))

    def budget(self, case: LayerCase, g: torch.Tensor, *, grads: bool) -> Budget:
        from xattn_ref.tolerance import layer_budget

        return layer_budget(self, case, self.dim + self.context_dim + case.context.shape[1], g, grads=grads)


class LayerKind(Kind):
    name = "layer"
    signature = "fn(x, context, context_mask) -> y; context_mask (B, Lk) bool, True = real token"
    properties = LAYER_PROPERTIES
    options = (
        DIM,
        Option("context_dim", "E_ctx, the last dim of context (default E)", default_from="dim"),
        Option("empty_rows", "policy for queries whose context is all padding: zero (the output does not "
               "depend on the padding) or finite (any finite output, e.g. the mean of the padding as Hugging "
               "Face eager attention and T5 give)", type="choice", choices=("zero", "finite"),
               default="zero"),
        FORWARD_ONLY,
        *CALL_OPTIONS,
    )
    roles = ("x", "context", "context_mask")

    def make_call(self, fn_for: FnFor, options: dict[str, Any], differentiable: bool) -> LayerCall:
        diff = differentiable and not options.get("forward_only", False)
        return LayerCall(
            fn_for,
            options["dim"],
            options["context_dim"],
            differentiable=diff,
            empty_rows=options.get("empty_rows", "zero"),
            **self.call_settings(options),
        )

    def cases(self, options: dict[str, Any], dtype: torch.dtype, device: str) -> st.SearchStrategy[Any]:
        from xattn_ref.strategies import layer_cases

        dims = {"dim": options["dim"], "context_dim": options["context_dim"]}
        return layer_cases(**dims, dtypes=[dtype], devices=[device])

    def probe(self, options: dict[str, Any], dtype: torch.dtype, device: str) -> LayerCase:
        from xattn_ref.cases import LayerCaseSpec

        dims = options["dim"], options["context_dim"]
        unit = (1.0, 1.0)
        return LayerCaseSpec(2, 3, 5, *dims, dtype, device, 0, unit, unit, key_padding_mask()).build()


def layer_call(fn: Callable[..., Any], dim: int, context_dim: int | None = None) -> LayerCall:
    """A layer callable as a call (it is used as given in every dtype)."""
    return LayerCall(fixed(fn), dim, context_dim or dim)
