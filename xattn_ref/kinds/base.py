"""What every kind shares: the :class:`Kind` base class, the calls' common parts, and the
options and properties more than one kind takes. Imports nothing heavy (the plugin reads the
kinds' options in every project that has xattn_ref installed)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from xattn_ref.errors import TargetError
from xattn_ref.kinds.callmap import CallMap
from xattn_ref.options import Option

if TYPE_CHECKING:
    import torch
    from hypothesis import strategies as st

    from xattn_ref.cases import MaskSpec
    from xattn_ref.kinds.callmap import CallMap

__all__ = [
    "CALL_OPTIONS",
    "DIM",
    "FORWARD_ONLY",
    "KERNEL_PROPERTIES",
    "FnFor",
    "Kind",
    "TargetCall",
    "fixed",
    "grad_mode",
    "key_padding_mask",
    "trainable_parameters",
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

#: How any target is called and read, whatever its kind.
CALL_OPTIONS = (
    Option("call", "the target's argument list, in Python, over the kind's roles, when it is not the "
           "kind's order: 'hidden_states=x, attention_mask=~mask, output_attentions=False' (~ inverts a "
           "bool mask to True = padding; additive(mask) makes a (B, 1, 1, L) 0/finfo.min float mask)",
           type="text", metavar="ARGS"),
    Option("select", "which part of what the target returns is the attention output: an index of a "
           "tuple (0, 1, ...) or a name (an attribute or a key); default: the tensor, or a tuple's first "
           "element", type="text", metavar="INDEX|NAME"),
    Option("backward", "take gradients with out.backward(g), not torch.autograd.grad (reentrant "
           "checkpointing accepts only the former)", type="switch", default=False),
)  # fmt: skip

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
    - ``properties``: the names (from :data:`xattn_ref.checks.PROPERTIES`) that apply, declared
      by each kind (none is inherited from here: a property added later applies to a kind only
      where that kind names it);
    - ``options``: what the kind needs to know about a target (a layer's dims, a dialect);
    - :meth:`make_call`: the target bound to the kind (what the checks run);
    - :meth:`cases`: the Hypothesis strategy of its cases;
    - :meth:`probe`: one plain valid case, to tell an unusable target early;
    - :meth:`complete`: the options the loaded target tells (a model's vocabulary);
    - :meth:`validate`: raises :class:`ValueError` for options that do not go together;
    - :meth:`describe`: how a target with these options is called, one line.
    """

    name: ClassVar[str]
    signature: ClassVar[str]
    properties: ClassVar[tuple[str, ...]]  # declared by each kind: a new property applies where named
    options: ClassVar[tuple[Option, ...]] = (FORWARD_ONLY, *CALL_OPTIONS)
    #: the names of the call's arguments, in the kind's order (what ``--call`` maps)
    roles: ClassVar[tuple[str, ...]] = ()

    def required_roles(self, options: dict[str, Any]) -> tuple[str, ...]:
        """The roles a ``--call`` must pass."""
        return self.roles

    def call_settings(self, options: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments of :class:`TargetCall` that ``options`` give."""
        text = options.get("call")
        return {
            "select": options.get("select"),
            "backward": bool(options.get("backward", False)),
            "callmap": CallMap.parse(text, self.required_roles(options)) if text else None,
        }

    def complete(self, options: dict[str, Any], fn_for: FnFor) -> None:
        """Fill in the options the target itself tells (a model's vocabulary, from its config);
        :class:`ValueError` naming the option when one is still open. Called once the target is
        loaded."""

    def make_call(self, fn_for: FnFor, options: dict[str, Any], differentiable: bool) -> Any:
        raise NotImplementedError

    def cases(self, options: dict[str, Any], dtype: torch.dtype, device: str) -> st.SearchStrategy[Any]:
        raise NotImplementedError

    def probe(self, options: dict[str, Any], dtype: torch.dtype, device: str) -> Any:
        raise NotImplementedError

    def validate(self, options: dict[str, Any]) -> None:
        """Raises :class:`ValueError` for options that do not go together."""
        self.call_settings(options)

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

    import torch

    return contextlib.nullcontext() if differentiable else torch.no_grad()


def trainable_parameters(fn: Any) -> dict[str, torch.Tensor]:
    """The parameters of ``fn`` that require grad, by name: an ``nn.Module``'s, or those of the
    modules a plain function holds (:func:`xattn_ref.wrapped.modules_of`), ``name.parameter``."""
    import torch

    from xattn_ref.wrapped import modules_of

    if isinstance(fn, torch.nn.Module):
        return {n: p for n, p in fn.named_parameters() if p.requires_grad}
    return {
        f"{m}.{n}": p
        for m, module in modules_of(fn).items()
        for n, p in module.named_parameters()
        if p.requires_grad
    }


def fixed(fn: Callable[..., Any]) -> FnFor:
    """``fn_for`` of a callable used as given in every dtype and device."""
    return lambda dtype, device: fn


class TargetCall:
    """What every kind's call shares: the target for a dtype and device (``fn_for``), whether it
    is differentiable, how it takes its arguments (``callmap``), which part of its return value
    is the output (``select``), and how gradients are taken (``backward``)."""

    empty_rows = "zero"

    def __init__(
        self,
        fn_for: FnFor,
        *,
        differentiable: bool = True,
        select: str | None = None,
        backward: bool = False,
        callmap: CallMap | None = None,
    ) -> None:
        self.fn_for = fn_for
        self.differentiable = differentiable
        self.select = select
        self.backward = backward
        self.callmap = callmap

    def describe(self, case: Any) -> str:
        """What the call adds to the case it is given, in words, for a failure report (how a
        packed or paged kind lays the case out); "" when nothing."""
        return ""

    def produce(self, case: Any, args: dict[str, Any], kwargs: dict[str, Any]) -> Any:
        """The target on these arguments (the kind's, mapped by ``--call``), its output selected
        (not yet checked)."""
        from xattn_ref._calls import invoke

        if self.callmap is not None:
            args, kwargs = self.callmap.apply(args, kwargs)
        with grad_mode(self.differentiable):
            out = invoke(self.fn_for(case.dtype, str(case.device)), args, kwargs)
        return select_output(out, self.select)


def select_output(out: Any, select: str | None) -> Any:
    """``out`` itself, or a tuple's first element; with ``select``, that index or name of it
    (:class:`~xattn_ref.errors.TargetError` when it has none)."""
    if select is None:
        return out[0] if isinstance(out, tuple) and out else out
    try:
        if select.isdigit():
            return out[int(select)]
        if isinstance(out, dict) and select in out:
            return out[select]
        return getattr(out, select)
    except (IndexError, KeyError, TypeError, AttributeError):
        what = f"a {type(out).__name__}" + (f" of {len(out)}" if isinstance(out, (tuple, list)) else "")
        raise TargetError(f"--select {select}: the target returned {what}, which has no {select!r}") from None
