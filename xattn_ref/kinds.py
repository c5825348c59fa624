"""The kinds of target, each declared once: how it is called, its cases, its properties, its
probe and its options. The runner, the CLI, the pytest plugin and the suite iterate over
:data:`KINDS`; adding a kind of target is adding one entry here.

- ``kernel``: ``fn(q, k, v, mask) -> out`` in SDPA's layout: q ``(B, H, Lq, D)``, k
  ``(B, H, Lk, D)``, v ``(B, H, Lk, Dv)``, out ``(B, H, Lq, Dv)``; mask None or bool
  broadcastable to ``(B, H, Lq, Lk)``, **True = may attend**.
- ``layer``: ``fn(x, context, context_mask) -> y`` (x-transformers' cross-attention call):
  x ``(B, Lq, E)``, context ``(B, Lk, E_ctx)``, context_mask ``(B, Lk)`` bool,
  **True = a real context token**; y ``(B, Lq, E_out)`` or a tuple whose first element is it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

# Nothing heavy at import: the pytest plugin reads the kinds' options in every project that has
# xattn_ref installed, so torch, Hypothesis and the cases are imported where they are used.
if TYPE_CHECKING:
    import torch
    from hypothesis import strategies as st

    from xattn_ref.cases import AttentionCase, LayerCase
    from xattn_ref.tolerance import Budget

__all__ = ["KINDS", "Kind", "KernelCall", "LayerCall", "Option", "kernel_call", "layer_call"]

#: ``fn_for(dtype, device)``: the target's callable for one dtype and device (a module copy, or
#: the product of a factory that takes them).
FnFor = Callable[["torch.dtype", str], Callable[..., Any]]


class KernelCall:
    """A kernel bound to its kind: ``call(case)`` runs ``fn(q, k, v, mask)`` and checks that the
    output is ``(B, H, Lq, Dv)`` in the inputs' dtype and device."""

    def __init__(self, fn_for: FnFor, *, differentiable: bool = True) -> None:
        self.fn_for = fn_for
        self.differentiable = differentiable

    def __call__(self, case: AttentionCase) -> torch.Tensor:
        from xattn_ref._calls import check_output, invoke

        out = invoke(self.fn_for(case.dtype, str(case.device)), case.arguments())
        expected = (case.q.shape[0], case.q.shape[1], case.q.shape[2], case.v.shape[-1])
        return check_output(out, case.q, lambda t: tuple(t.shape) == expected, f"(B, H, Lq, Dv) = {expected}")

    def parameters(self, case: AttentionCase) -> dict[str, torch.Tensor]:
        return {}

    def budget(self, case: AttentionCase, g: torch.Tensor, *, grads: bool) -> Budget:
        from xattn_ref.tolerance import kernel_budget

        return kernel_budget(case, g, grads=grads)


class LayerCall:
    """A layer bound to its kind: ``call(case)`` runs ``fn(x, context, context_mask)``; gradients
    reach x, context and every trainable parameter."""

    def __init__(self, fn_for: FnFor, dim: int, context_dim: int, *, differentiable: bool = True) -> None:
        self.fn_for = fn_for
        self.dim = dim
        self.context_dim = context_dim
        self.differentiable = differentiable

    def __call__(self, case: LayerCase) -> torch.Tensor:
        from xattn_ref._calls import check_output, invoke

        y = invoke(self.fn_for(case.dtype, str(case.device)), case.arguments())
        if isinstance(y, tuple) and y:
            y = y[0]
        lead = tuple(case.x.shape[:2])
        return check_output(
            y,
            case.x,
            lambda t: t.ndim == 3 and tuple(t.shape[:2]) == lead,
            f"(B, Lq, E_out) with (B, Lq) = {lead} (or a tuple whose first element is one)",
        )

    def parameters(self, case: LayerCase) -> dict[str, torch.Tensor]:
        import torch

        fn = self.fn_for(case.dtype, str(case.device))
        if not isinstance(fn, torch.nn.Module):
            return {}
        return {n: p for n, p in fn.named_parameters() if p.requires_grad}

    def budget(self, case: LayerCase, g: torch.Tensor, *, grads: bool) -> Budget:
        from xattn_ref.tolerance import layer_budget

        return layer_budget(self, case, self.dim + self.context_dim + case.context.shape[1])


def _fixed(fn: Callable[..., Any]) -> FnFor:
    return lambda dtype, device: fn


def kernel_call(fn: Callable[..., Any], *, differentiable: bool = True) -> KernelCall:
    """A kernel function as a call, to run the checks of :mod:`xattn_ref.checks` directly."""
    return KernelCall(_fixed(fn), differentiable=differentiable)


def layer_call(fn: Callable[..., Any], dim: int, context_dim: int | None = None) -> LayerCall:
    """A layer callable as a call (it is used as given in every dtype)."""
    return LayerCall(_fixed(fn), dim, context_dim or dim)


@dataclass(frozen=True)
class Option:
    """An option of a kind: ``--NAME`` in the CLI, ``--xattn-NAME`` and ``$XATTN_NAME`` in the
    plugin. ``default_from``: another option whose value is the default."""

    name: str
    help: str
    required: bool = False
    default_from: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def _key_padding() -> Any:
    from xattn_ref.cases import MaskSpec, SlicePattern

    return MaskSpec("key_padding", (SlicePattern("all_true"), SlicePattern("right_padding", 3)))


def _kernel_cases(options: dict[str, Any], dtype: torch.dtype, device: str) -> st.SearchStrategy[Any]:
    from xattn_ref.strategies import attention_cases

    return attention_cases(dtypes=[dtype], devices=[device])


def _kernel_probe(options: dict[str, Any], dtype: torch.dtype, device: str) -> AttentionCase:
    from xattn_ref.cases import CaseSpec

    return CaseSpec(2, 2, 3, 5, 8, 8, dtype, device, 0, (1.0, 1.0), (1.0, 1.0), _key_padding()).build()


def _layer_cases(options: dict[str, Any], dtype: torch.dtype, device: str) -> st.SearchStrategy[Any]:
    from xattn_ref.strategies import layer_cases

    return layer_cases(
        dim=options["dim"], context_dim=options["context_dim"], dtypes=[dtype], devices=[device]
    )


def _layer_probe(options: dict[str, Any], dtype: torch.dtype, device: str) -> LayerCase:
    from xattn_ref.cases import LayerCaseSpec

    dims = options["dim"], options["context_dim"]
    return LayerCaseSpec(2, 3, 5, *dims, dtype, device, 0, (1.0, 1.0), (1.0, 1.0), _key_padding()).build()


@dataclass(frozen=True)
class Kind:
    """A kind of target.

    - ``name``, ``signature``: how the target is called, the mask convention included;
    - ``properties``: the names (from :data:`xattn_ref.checks.PROPERTIES`) that apply;
    - ``options``: what the kind needs to know about a target (a layer's dims);
    - ``make_call(fn_for, options, differentiable)``: the target bound to the kind;
    - ``cases(options, dtype, device)``: the Hypothesis strategy of its cases;
    - ``probe(options, dtype, device)``: one plain valid case, to tell an unusable target early.
    """

    name: str
    signature: str
    properties: tuple[str, ...]
    options: tuple[Option, ...]
    make_call: Callable[[FnFor, dict[str, Any], bool], Any]
    cases: Callable[[dict[str, Any], torch.dtype, str], st.SearchStrategy[Any]]
    probe: Callable[[dict[str, Any], torch.dtype, str], Any]


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind(
            name="kernel",
            signature="fn(q, k, v, mask) -> out in SDPA's layout; mask bool, True = may attend",
            properties=(
                "finite_output",
                "finite_grad",
                "empty_rows_zero",
                "padding_invariance",
                "nan_padding_invariance",
                "compaction_equivalence",
                "reference_agreement",
                "batch_independence",
                "no_input_mutation",
                "dtype_consistency",
                "device_consistency",
            ),
            options=(),
            make_call=lambda fn_for, options, diff: KernelCall(fn_for, differentiable=diff),
            cases=_kernel_cases,
            probe=_kernel_probe,
        ),
        Kind(
            name="layer",
            signature="fn(x, context, context_mask) -> y; context_mask (B, Lk) bool, True = real token",
            properties=(
                "finite_output",
                "finite_grad",
                "padding_invariance",
                "nan_padding_invariance",
                "compaction_equivalence",
                "batch_independence",
                "no_input_mutation",
                "dtype_consistency",
                "device_consistency",
            ),
            options=(
                Option("dim", "E, the model dim of x (required with the layer kind)", required=True),
                Option("context_dim", "E_ctx, the last dim of context (default E)", default_from="dim"),
            ),
            make_call=lambda fn_for, options, diff: LayerCall(
                fn_for, options["dim"], options["context_dim"], differentiable=diff
            ),
            cases=_layer_cases,
            probe=_layer_probe,
        ),
    )
}
