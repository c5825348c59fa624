"""The ``hf`` kind: Hugging Face's attention interface, ``fn(module, query, key, value,
attention_mask, scaling=s, dropout=0.0) -> (out, weights)`` with ``out`` ``(B, Lq, H, Dv)`` and
``module.num_key_value_groups = H // H_kv``. Its options are the kernel dialect's, with grouped kv
heads and ``finfo.min`` masks by default and the scale always passed (as ``scaling``).

With ``--causal``, the causal part travels in the mask (``--causal-in-mask`` is implied), as
Hugging Face's mask builders put it there and its functions take ``is_causal`` only where no
mask is given; ``module.is_causal`` says it. With ``--window``, the window travels in the mask
too, as the mask builders put a sliding window there for the eager and sdpa paths, and a window
``(left, 0)`` is also passed as ``sliding_window=left + 1`` (keys ``i - sliding_window < j <=
i``), as Mistral and Gemma 2 pass it for the paths that take it (flash-attention's)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from xattn_ref.dialects import DIALECT_OPTIONS, Dialect
from xattn_ref.kinds.base import CALL_OPTIONS, FnFor
from xattn_ref.kinds.kernel import KernelCall, KernelKind

if TYPE_CHECKING:
    import torch
    from hypothesis import strategies as st

    from xattn_ref.cases import AttentionCase

__all__ = ["HFCall", "HFKind"]

_DEFAULTS = {"heads": "gqa", "mask": "sentinel"}


class HFCall(KernelCall):
    """A Hugging Face attention function bound to the ``hf`` kind: ``fn(module, query, key, value,
    attention_mask, scaling=s, dropout=0.0[, is_causal=True]) -> (out, weights)`` with ``out``
    ``(B, Lq, H, Dv)``; ``module.num_key_value_groups`` says H // H_kv
    (:func:`xattn_ref.conventions.hf_module`)."""

    def arguments(self, case: AttentionCase) -> tuple[dict[str, Any], dict[str, Any]]:
        import torch

        from xattn_ref.cases import window_mask
        from xattn_ref.conventions import hf_module

        window = case.window
        if window is not None:  # in the mask, as Hugging Face's mask builders put it
            allowed = window_mask(window, case.q.shape[2], case.k.shape[2], case.q.device)
            case = case.replace(mask=allowed if case.mask is None else case.mask & allowed, window=None)
        args, kwargs = self.dialect.arguments(case)
        causal = bool(kwargs.pop("is_causal", False)) or self.dialect.causal != "none"
        module = hf_module(case.groups, is_causal=causal)  # as a decoder's attention is
        call_kwargs: dict[str, Any] = {"scaling": case.effective_scale, "dropout": 0.0}
        if window is not None and window[0] >= 0 and window[1] == 0:
            call_kwargs["sliding_window"] = window[0] + 1
        if "softcap" in kwargs:  # Gemma 2's eager_attention_forward(..., softcap=)
            call_kwargs["softcap"] = kwargs["softcap"]
        if self.dialect.sinks:  # gpt-oss's: a parameter of the module, (H,)
            module.sinks = kwargs["sinks"]
        if causal:
            call_kwargs["is_causal"] = True
        named = {"module": module, "query": args["q"], "key": args["k"], "value": args["v"]}
        mask = args["mask"]
        if isinstance(mask, torch.Tensor) and mask.ndim < 4:  # Hugging Face masks are 4-D
            mask = mask.reshape((1,) * (4 - mask.ndim) + tuple(mask.shape))
        return {**named, "attention_mask": mask}, call_kwargs

    def run(self, case: AttentionCase, args: dict[str, Any], kwargs: dict[str, Any]) -> torch.Tensor:
        from xattn_ref._calls import check_output

        out = self.produce(case, args, kwargs)
        b, h, lq, dv = case.q.shape[0], case.q.shape[1], case.q.shape[2], case.v.shape[-1]
        expected = (b, lq, h, dv)
        out = check_output(out, case.q, lambda t: tuple(t.shape) == expected, f"(B, Lq, H, Dv) = {expected}")
        return self.dialect.restore_heads(out.transpose(1, 2), case)

    def snippet(self) -> str:
        return (
            "from xattn_ref.dialects import Dialect\nfrom xattn_ref.kinds import HFCall\n"
            f"args, kwargs = HFCall(lambda *_: fn, dialect={self.dialect!r}).arguments(case)\n"
            "out, weights = fn(*args.values(), **kwargs)  # out: (B, Lq, H, Dv)"
        )


class HFKind(KernelKind):
    name = "hf"
    signature = (
        "fn(module, query, key, value, attention_mask, scaling=s, dropout=0.0) -> (out (B, Lq, H, Dv), "
        "weights), Hugging Face's attention interface (module.num_key_value_groups = H // H_kv)"
    )
    options = (
        *(
            dataclasses.replace(o, default=_DEFAULTS.get(o.name, o.default))
            for o in DIALECT_OPTIONS
            if o.name not in ("scale", "bias", "key_padding", "layout")  # HF's interface fixes its layout
        ),
        *CALL_OPTIONS,
    )
    roles = ("module", "query", "key", "value", "attention_mask")

    def required_roles(self, options: dict[str, Any]) -> tuple[str, ...]:
        return self.roles

    def dialect(self, options: dict[str, Any]) -> Dialect:
        # Hugging Face's functions take is_causal only when no mask is given: with a mask, the
        # causal part travels in it, as its mask builders put it (unless the function is causal
        # by construction, --fixed-causal)
        causal = options.get("causal", "none") != "none" and not options.get("fixed_causal")
        carried = causal and options.get("mask", "sentinel") != "none"
        in_mask = carried or bool(options.get("causal_in_mask"))
        return Dialect.from_options({**options, "scale": True, "causal_in_mask": in_mask})

    def make_call(self, fn_for: FnFor, options: dict[str, Any], differentiable: bool) -> HFCall:
        return HFCall(
            fn_for,
            dialect=self.dialect(options),
            differentiable=differentiable,
            **self.call_settings(options),
        )

    def cases(self, options: dict[str, Any], dtype: torch.dtype, device: str) -> st.SearchStrategy[Any]:
        from xattn_ref.strategies import attention_cases

        # Hugging Face builds (B, 1, Lq, Lk) masks: key padding, or padding and causal together
        args = {"mask_layouts": ["key_padding", "query_key"], **self.dialect(options).case_arguments()}
        return attention_cases(dtypes=[dtype], devices=[device], **args)

    def describe(self, options: dict[str, Any]) -> str:
        dialect = self.dialect(options)
        words = [dialect.signature().split("; ", 1)[1]]
        words += ["softcap=c"] if dialect.softcap else []
        words += ["module.sinks (H,)"] if dialect.sinks else []
        if dialect.window:
            words.append("a sliding window in the mask (sliding_window=left+1 for (left, 0))")
        return "; ".join([self.signature, *words])
