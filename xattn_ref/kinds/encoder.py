"""The ``encoder`` kind: a self-attention layer, ``fn(x, mask) -> y (B, L, E_out)``; mask
``(B, L)`` bool, **True = a real token**. Its properties are the layer kind's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from xattn_ref.kinds.base import CALL_OPTIONS, DIM, FORWARD_ONLY, FnFor, Kind, key_padding_mask
from xattn_ref.kinds.layer import LAYER_PROPERTIES, LayerCall

if TYPE_CHECKING:
    import torch
    from hypothesis import strategies as st

    from xattn_ref.tolerance import Budget

__all__ = ["EncoderCall", "EncoderKind"]


class EncoderCall(LayerCall):
    """A self-attention layer bound to the ``encoder`` kind: ``call(case)`` runs ``fn(x, mask)``
    and checks that y is ``(B, L, E_out)`` (or a tuple whose first element is); gradients reach
    x and every trainable parameter."""

    length_name = "L"

    def __init__(self, fn_for: FnFor, dim: int, *, differentiable: bool = True, **settings: Any) -> None:
        super().__init__(fn_for, dim, dim, differentiable=differentiable, **settings)

    def budget(self, case: Any, g: torch.Tensor, *, grads: bool) -> Budget:
        from xattn_ref.tolerance import layer_budget

        return layer_budget(self, case, 2 * self.dim + case.x.shape[1], g, grads=grads)


class EncoderKind(Kind):
    name = "encoder"
    signature = "fn(x, mask) -> y (B, L, E_out); mask (B, L) bool, True = real token (self-attention)"
    properties = LAYER_PROPERTIES
    options = (DIM, FORWARD_ONLY, *CALL_OPTIONS)
    roles = ("x", "mask")

    def make_call(self, fn_for: FnFor, options: dict[str, Any], differentiable: bool) -> EncoderCall:
        diff = differentiable and not options.get("forward_only", False)
        return EncoderCall(fn_for, options["dim"], differentiable=diff, **self.call_settings(options))

    def cases(self, options: dict[str, Any], dtype: torch.dtype, device: str) -> st.SearchStrategy[Any]:
        from xattn_ref.strategies import encoder_cases

        return encoder_cases(dim=options["dim"], dtypes=[dtype], devices=[device])

    def probe(self, options: dict[str, Any], dtype: torch.dtype, device: str) -> Any:
        from xattn_ref.cases import EncoderCaseSpec

        return EncoderCaseSpec(
            batch_size=2,
            length=5,
            dim=options["dim"],
            dtype=dtype,
            device=device,
            seed=0,
            x_std=(1.0, 1.0),
            mask=key_padding_mask(),
        ).build()
