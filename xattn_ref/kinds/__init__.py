"""The kinds of target, each declared once: how it is called, its cases, its properties, its
probe and its options. The runner, the CLI, the pytest plugin and the suite iterate over
:data:`KINDS`; adding a kind of target is adding one entry here.

- ``kernel``: ``fn(q, k, v, mask) -> out`` in SDPA's layout: q ``(B, H, Lq, D)``, k
  ``(B, H, Lk, D)``, v ``(B, H, Lk, Dv)``, out ``(B, H, Lq, Dv)``; mask None or bool
  broadcastable to ``(B, H, Lq, Lk)``, **True = may attend**. Its dialect options (grouped kv
  heads, float and sentinel masks, biases, ``scale=``, ``is_causal=True``, ``(B, Lk)`` masks,
  self-attention, the empty-row policy, forward-only) are :class:`xattn_ref.dialects.Dialect`.
- ``layer``: ``fn(x, context, context_mask) -> y`` (x-transformers' cross-attention call):
  x ``(B, Lq, E)``, context ``(B, Lk, E_ctx)``, context_mask ``(B, Lk)`` bool,
  **True = a real context token**; y ``(B, Lq, E_out)`` or a tuple whose first element is it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from xattn_ref.errors import UsageError
from xattn_ref.options import Option, did_you_mean

# Nothing heavy at import: the pytest plugin reads the kinds' options in every project that has
# xattn_ref installed, so torch, Hypothesis and the cases are imported where they are used.
if TYPE_CHECKING:
    import torch
    from hypothesis import strategies as st

    from xattn_ref.cases import AttentionCase, LayerCase
    from xattn_ref.dialects import Dialect

from xattn_ref.kinds.calls import (
    EncoderCall,
    FnFor,
    HFCall,
    KernelCall,
    LayerCall,
    VarlenCall,
    kernel_call,
    layer_call,
)

__all__ = [
    "KINDS",
    "KernelCall",
    "Kind",
    "LayerCall",
    "Option",
    "kernel_call",
    "layer_call",
    "resolve_options",
]


#: The dialect options of kernels (:class:`xattn_ref.dialects.Dialect`), and forward-only.
_DIM = Option("dim", "E, the model dim of x (required with the layer kinds)", required=True)
_FORWARD_ONLY = Option(
    "forward_only",
    "the target is not differentiable: gradient properties are skipped",
    type="switch",
    default=False,
)
_DIALECT_OPTIONS = (
    Option("heads", "equal: k, v with H heads; gqa: H_kv heads dividing H (enable_gqa)", type="choice",
           choices=("equal", "gqa"), default="equal"),
    Option("mask", "the mask argument: bool (True = may attend), additive (0/-inf float), sentinel "
           "(masked = --sentinel) or none", type="choice", choices=("bool", "additive", "sentinel", "none"),
           default="bool"),
    Option("sentinel", "masked value of sentinel masks: min (finfo(dtype).min) or a number", type="text",
           default="min"),
    Option("bias", "finite biases (ALiBi, learned) in the float mask's allowed entries", type="switch",
           default=False),
    Option("scale", "the kernel takes scale= (drawn, not the default)", type="switch", default=False),
    Option("causal", "is_causal=True with this alignment: none, top_left (SDPA), bottom_right", type="choice",
           choices=("none", "top_left", "bottom_right"), default="none"),
    Option("causal_in_mask", "no is_causal: the causal mask travels in the mask with the padding",
           type="switch", default=False),
    Option("key_padding", "the mask is (B, Lk), one row of keys per batch element", type="switch",
           default=False),
    Option("self_attention", "Lq == Lk", type="switch", default=False),
    Option("query_padding", "with --key-padding --self-attention: the (B, L) mask pads queries too",
           type="switch", default=False),
    Option("empty_rows", "policy for rows with no allowed key: zero (exact) or finite (e.g. the mean of v)",
           type="choice", choices=("zero", "finite"), default="zero"),
    Option("head_dims", "any: D and Dv drawn apart (1 to 64); fused: Dv = D in 8, 16, 64, 128, what "
           "fused kernels (flash-attention, cuDNN) take", type="choice", choices=("any", "fused"),
           default="any"),
    _FORWARD_ONLY,
)  # fmt: skip


def _key_padding() -> Any:
    from xattn_ref.cases import MaskSpec, SlicePattern

    return MaskSpec("key_padding", (SlicePattern("all_true"), SlicePattern("right_padding", 3)))


def _dialect(options: dict[str, Any]) -> Dialect:
    from xattn_ref.dialects import Dialect

    return Dialect.from_options(options)


def _kernel_cases(options: dict[str, Any], dtype: torch.dtype, device: str) -> st.SearchStrategy[Any]:
    return _dialect(options).cases(dtype, device)


def _kernel_probe(options: dict[str, Any], dtype: torch.dtype, device: str) -> AttentionCase:
    return _dialect(options).probe(dtype, device)


def _with_defaults(options: tuple[Option, ...], **defaults: Any) -> tuple[Option, ...]:
    return tuple(dataclasses.replace(o, default=defaults.get(o.name, o.default)) for o in options)


#: Hugging Face attention functions: grouped kv heads and finfo.min masks by default, and the
#: scale always passed (as ``scaling``).
_HF_OPTIONS = _with_defaults(
    tuple(o for o in _DIALECT_OPTIONS if o.name not in ("scale", "bias", "key_padding")),
    heads="gqa",
    mask="sentinel",
)


def _hf_dialect(options: dict[str, Any]) -> Dialect:
    return _dialect({**options, "scale": True})


def _hf_call(fn_for: FnFor, options: dict[str, Any], diff: bool) -> HFCall:
    return HFCall(fn_for, dialect=_hf_dialect(options), differentiable=diff)


def _hf_cases(options: dict[str, Any], dtype: torch.dtype, device: str) -> st.SearchStrategy[Any]:
    from xattn_ref.strategies import attention_cases

    # Hugging Face builds (B, 1, Lq, Lk) masks: key padding, or padding and causal together
    args = {"mask_layouts": ["key_padding", "query_key"], **_hf_dialect(options).case_arguments()}
    return attention_cases(dtypes=[dtype], devices=[device], **args)


def _hf_probe(options: dict[str, Any], dtype: torch.dtype, device: str) -> AttentionCase:
    return _hf_dialect(options).probe(dtype, device)


def _validate_hf(options: dict[str, Any]) -> None:
    _hf_dialect(options)  # raises ValueError for options that do not go together


def _describe_hf(options: dict[str, Any]) -> str:
    return _HF_SIGNATURE + "; " + _hf_dialect(options).signature().split("; ", 1)[1]


def _varlen_call(fn_for: FnFor, options: dict[str, Any], diff: bool) -> VarlenCall:
    forward_only = bool(options.get("forward_only", False))
    return VarlenCall(fn_for, dialect=_dialect({"forward_only": forward_only}), differentiable=diff)


def _describe_varlen(options: dict[str, Any]) -> str:
    return _forward_only_words(_VARLEN_SIGNATURE, options)


def _varlen_cases(options: dict[str, Any], dtype: torch.dtype, device: str) -> st.SearchStrategy[Any]:
    from xattn_ref.strategies import attention_cases

    # each batch element is a sequence: its keys first, padding after; all padding = length 0
    patterns = ["all_false", "all_true", "right_padding"]
    return attention_cases(
        dtypes=[dtype],
        devices=[device],
        mask_layouts=["key_padding"],
        mask_patterns=patterns,
        allow_no_mask=False,
    )


def _varlen_probe(options: dict[str, Any], dtype: torch.dtype, device: str) -> AttentionCase:
    from xattn_ref.cases import CaseSpec

    return CaseSpec(2, 2, 3, 5, 8, 8, dtype, device, 0, (1.0, 1.0), (1.0, 1.0), _key_padding()).build()


def _layer_cases(options: dict[str, Any], dtype: torch.dtype, device: str) -> st.SearchStrategy[Any]:
    from xattn_ref.strategies import layer_cases

    return layer_cases(
        dim=options["dim"], context_dim=options["context_dim"], dtypes=[dtype], devices=[device]
    )


def _encoder_cases(options: dict[str, Any], dtype: torch.dtype, device: str) -> st.SearchStrategy[Any]:
    from xattn_ref.strategies import encoder_cases

    return encoder_cases(dim=options["dim"], dtypes=[dtype], devices=[device])


def _encoder_probe(options: dict[str, Any], dtype: torch.dtype, device: str) -> Any:
    from xattn_ref.cases import EncoderCaseSpec

    return EncoderCaseSpec(2, 5, options["dim"], dtype, device, 0, (1.0, 1.0), _key_padding()).build()


def _encoder_call(fn_for: FnFor, options: dict[str, Any], diff: bool) -> EncoderCall:
    return EncoderCall(fn_for, options["dim"], differentiable=diff and not options.get("forward_only", False))


def _describe_encoder(options: dict[str, Any]) -> str:
    return _forward_only_words(_ENCODER_SIGNATURE, options)


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
    - ``probe(options, dtype, device)``: one plain valid case, to tell an unusable target early;
    - ``validate(options)``: raises :class:`ValueError` for options that do not go together;
    - ``describe(options)``: how a target with these options is called (its dialect), one line.
    """

    name: str
    signature: str
    properties: tuple[str, ...]
    options: tuple[Option, ...]
    make_call: Callable[[FnFor, dict[str, Any], bool], Any]
    cases: Callable[[dict[str, Any], torch.dtype, str], st.SearchStrategy[Any]]
    probe: Callable[[dict[str, Any], torch.dtype, str], Any]
    validate: Callable[[dict[str, Any]], None] = lambda options: None
    describe: Callable[[dict[str, Any]], str] = lambda options: ""  # "" means the signature


_LAYER_SIGNATURE = "fn(x, context, context_mask) -> y; context_mask (B, Lk) bool, True = real token"


def _forward_only_words(signature: str, options: dict[str, Any]) -> str:
    return signature + ("; forward-only" if options.get("forward_only") else "")


def _describe_layer(options: dict[str, Any]) -> str:
    return _forward_only_words(_LAYER_SIGNATURE, options)


def _validate_kernel(options: dict[str, Any]) -> None:
    _dialect(options)  # raises ValueError for options that do not go together


def _describe_kernel(options: dict[str, Any]) -> str:
    return _dialect(options).signature()


_KERNEL_PROPERTIES = (
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
#: Layers have no reference: the kernel properties but empty_rows_zero and reference_agreement.
_LAYER_PROPERTIES = tuple(
    p for p in _KERNEL_PROPERTIES if p not in ("empty_rows_zero", "reference_agreement")
)
_HF_SIGNATURE = (
    "fn(module, query, key, value, attention_mask, scaling=s, dropout=0.0) -> (out (B, Lq, H, Dv), weights), "
    "Hugging Face's attention interface (module.num_key_value_groups = H // H_kv)"
)
_ENCODER_SIGNATURE = "fn(x, mask) -> y (B, L, E_out); mask (B, L) bool, True = real token (self-attention)"
_VARLEN_SIGNATURE = (
    "fn(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k) -> out (total_q, H, Dv); "
    "packed (total, H, D), one sequence per batch element, zero-length ones included"
)

KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind(
            name="kernel",
            signature="fn(q, k, v, mask) -> out in SDPA's layout; mask bool, True = may attend",
            properties=_KERNEL_PROPERTIES,
            options=_DIALECT_OPTIONS,
            make_call=lambda fn_for, options, diff: KernelCall(
                fn_for, dialect=_dialect(options), differentiable=diff
            ),
            cases=_kernel_cases,
            probe=_kernel_probe,
            validate=_validate_kernel,
            describe=_describe_kernel,
        ),
        Kind(
            name="hf",
            signature=_HF_SIGNATURE,
            properties=_KERNEL_PROPERTIES,
            options=_HF_OPTIONS,
            make_call=_hf_call,
            cases=_hf_cases,
            probe=_hf_probe,
            validate=_validate_hf,
            describe=_describe_hf,
        ),
        Kind(
            name="varlen",
            signature=_VARLEN_SIGNATURE,
            properties=tuple(p for p in _KERNEL_PROPERTIES if "padding_invariance" not in p),
            options=(_FORWARD_ONLY,),
            make_call=_varlen_call,
            cases=_varlen_cases,
            probe=_varlen_probe,
            describe=_describe_varlen,
        ),
        Kind(
            name="layer",
            signature=_LAYER_SIGNATURE,
            properties=_LAYER_PROPERTIES,
            options=(
                _DIM,
                Option("context_dim", "E_ctx, the last dim of context (default E)", default_from="dim"),
                _FORWARD_ONLY,
            ),
            make_call=lambda fn_for, options, diff: LayerCall(
                fn_for,
                options["dim"],
                options["context_dim"],
                differentiable=diff and not options.get("forward_only", False),
            ),
            describe=_describe_layer,
            cases=_layer_cases,
            probe=_layer_probe,
        ),
        Kind(
            name="encoder",
            signature=_ENCODER_SIGNATURE,
            properties=_LAYER_PROPERTIES,
            options=(_DIM, _FORWARD_ONLY),
            make_call=_encoder_call,
            cases=_encoder_cases,
            probe=_encoder_probe,
            describe=_describe_encoder,
        ),
    )
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
                raise UsageError(f"{flag} is required for a {kind} target ({option.help})")
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
