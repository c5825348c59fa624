"""The kinds of target, one module each (:mod:`.kernel`, :mod:`.hf`, :mod:`.varlen`, :mod:`.paged`,
:mod:`.layer`, :mod:`.encoder`, :mod:`.model`), each a :class:`~xattn_ref.kinds.base.Kind`: how it is
called, its cases, its
properties, its probe and its options. The runner, the CLI, the pytest plugin and the suite
iterate over :data:`KINDS`; adding a kind of target is adding its module and one line here.

Nothing heavy at import: the pytest plugin reads the kinds' options in every project that has
xattn_ref installed, so torch, Hypothesis and the cases are imported where they are used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from xattn_ref.errors import UsageError
from xattn_ref.kinds.base import FnFor, Kind
from xattn_ref.kinds.encoder import EncoderCall, EncoderKind
from xattn_ref.kinds.hf import HFCall, HFKind
from xattn_ref.kinds.kernel import KernelCall, KernelKind, kernel_call
from xattn_ref.kinds.layer import LayerCall, LayerKind, layer_call
from xattn_ref.kinds.model import ModelCall, ModelKind
from xattn_ref.kinds.paged import PagedCall, PagedKind
from xattn_ref.kinds.varlen import VarlenCall, VarlenKind
from xattn_ref.options import did_you_mean

__all__ = [
    "KINDS",
    "EncoderCall",
    "FnFor",
    "HFCall",
    "KernelCall",
    "Kind",
    "LayerCall",
    "ModelCall",
    "PagedCall",
    "VarlenCall",
    "check_property_names",
    "kernel_call",
    "layer_call",
    "resolve_options",
]

#: Every kind, by name.
KINDS: dict[str, Kind] = {
    k.name: k
    for k in (KernelKind(), HFKind(), VarlenKind(), PagedKind(), LayerKind(), EncoderKind(), ModelKind())
}


def resolve_options(kind: str, given: dict[str, Any], prefix: str = "--") -> dict[str, Any]:
    """The kind's options from ``given`` (name -> value or None), parsed and checked, defaults
    filled in. Raises :class:`UsageError` naming the flag (``prefix`` + name)."""
    if kind not in KINDS:
        raise UsageError(
            f"{prefix}kind: unknown kind {kind!r}; expected one of {', '.join(KINDS)}"
            + did_you_mean(kind, list(KINDS))
        )
    options: dict[str, Any] = {}
    for option in KINDS[kind].options:
        flag = prefix + option.name.replace("_", "-")
        value = given.get(option.name)
        if value is None and option.default_from is not None:
            value = options[option.default_from]
        if value is None:
            if option.required:
                raise UsageError(f"{flag} is required for the {kind} kind ({option.help})")
            if option.default is not None:
                options[option.name] = option.default
            continue
        options[option.name] = option.parse(value, flag)
    try:
        KINDS[kind].validate(options)
    except ValueError as exc:
        raise UsageError(f"{kind} options: {exc}") from None
    return options


def check_property_names(only: Sequence[str] | None, skip: Sequence[str] | None, prefix: str = "--") -> None:
    """:class:`UsageError` (one line, with the closest name) for a property no kind has."""
    known = sorted({p for k in KINDS.values() for p in k.properties})
    for option, chosen in ((f"{prefix}property", only), (f"{prefix}skip", skip)):
        for name in chosen or []:
            if name not in known:
                raise UsageError(
                    f"{option}: unknown property {name!r}; expected one of {', '.join(known)}"
                    + did_you_mean(name, known)
                )
