"""What every kind shares: the :class:`Kind` base class, the calls' common parts, and the
options and properties more than one kind takes. Imports nothing heavy (the plugin reads the
kinds' options in every project that has xattn_ref installed)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from xattn_ref.options import Option

if TYPE_CHECKING:
    import torch
    from hypothesis import strategies as st

    from xattn_ref.cases import MaskSpec

__all__ = [
    "DIM",
    "FORWARD_ONLY",
    "KERNEL_PROPERTIES",
    "FnFor",
    "Kind",
    "fixed",
    "grad_mode",
    "key_padding_mask",
]

#: ``fn_for(dtype, device)``: the target's callable for one dtype and device (a module copy, or
#: the product of a factory that takes them).
FnFor = Callable[["torch.dtype", str], Callable[..., Any]]

DIM = Option("dim", "E, the model dim of x (required with the layer kinds)", required=True)
FORWARD_ONLY = Option(
    "forward_only",
    "the target is not differentiable: gradient properties are skipped",
    type="switch",
    default=False,
)

KERNEL_PROPERTIES: tuple[str, ...] = (
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
)


class Kind:
    """A kind of target: subclass it in a module of its own and add an instance to
    :data:`xattn_ref.kinds.KINDS`.

    - ``name``, ``signature``: how the target is called, the mask convention included;
    - ``properties``: the names (from :data:`xattn_ref.checks.PROPERTIES`) that apply;
    - ``options``: what the kind needs to know about a target (a layer's dims, a dialect);
    - :meth:`make_call`: the target bound to the kind (what the checks run);
    - :meth:`cases`: the Hypothesis strategy of its cases;
    - :meth:`probe`: one plain valid case, to tell an unusable target early;
    - :meth:`validate`: raises :class:`ValueError` for options that do not go together;
    - :meth:`describe`: how a target with these options is called, one line.
    """

    name: ClassVar[str]
    signature: ClassVar[str]
    properties: ClassVar[tuple[str, ...]] = KERNEL_PROPERTIES
    options: ClassVar[tuple[Option, ...]] = (FORWARD_ONLY,)

    def make_call(self, fn_for: FnFor, options: dict[str, Any], differentiable: bool) -> Any:
        raise NotImplementedError

    def cases(self, options: dict[str, Any], dtype: torch.dtype, device: str) -> st.SearchStrategy[Any]:
        raise NotImplementedError

    def probe(self, options: dict[str, Any], dtype: torch.dtype, device: str) -> Any:
        raise NotImplementedError

    def validate(self, options: dict[str, Any]) -> None:
        """Nothing to check by default."""

    def describe(self, options: dict[str, Any]) -> str:
        return self.signature + ("; forward-only" if options.get("forward_only") else "")

    def __repr__(self) -> str:
        return f"<kind {self.name}>"


def key_padding_mask() -> MaskSpec:
    """The probes' mask: one batch element unpadded, one with its last 3 keys padded."""
    from xattn_ref.cases import MaskSpec, SlicePattern

    return MaskSpec("key_padding", (SlicePattern("all_true"), SlicePattern("right_padding", 3)))


def grad_mode(differentiable: bool) -> Any:
    """Forward-only targets run as inference does, under ``torch.no_grad()`` (where fast paths
    such as ``nn.TransformerEncoderLayer``'s take over)."""
    import contextlib

    import torch

    return contextlib.nullcontext() if differentiable else torch.no_grad()


def fixed(fn: Callable[..., Any]) -> FnFor:
    """``fn_for`` of a callable used as given in every dtype and device."""
    return lambda dtype, device: fn
