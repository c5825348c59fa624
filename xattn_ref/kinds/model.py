"""The ``model`` kind: a whole model, ``fn(input_ids, attention_mask) -> logits``
(``attention_mask`` ``(B, L)`` int64, **1 = a real token**, as Hugging Face's tokenizers give
it), or an encoder-decoder's ``fn(input_ids, attention_mask, decoder_input_ids,
decoder_attention_mask)``; logits ``(B, L, V)`` (the decoder's), or an object with ``.logits``
(a Hugging Face output), or a tuple whose first element is them.

A Hugging Face model (a ``transformers`` ``PreTrainedModel``) is called by keyword; a language
model gets ``position_ids`` derived from the mask as generation derives them (``--positions
model``: it derives its own), is decoded step by step with its own cache (``cached_decoding``), and runs in
each attention implementation it offers (``implementation_consistency``); its vocabulary and
architecture are read from its config. Any other callable gets ``input_ids`` and
``attention_mask`` and owns its positions; ``--vocab`` says how many token ids it takes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from xattn_ref.errors import NotTaken, TargetError
from xattn_ref.kinds.base import (
    CALL_OPTIONS,
    FORWARD_ONLY,
    FnFor,
    Kind,
    TargetCall,
    grad_mode,
    select_output,
    trainable_parameters,
)
from xattn_ref.options import Option

if TYPE_CHECKING:
    import torch
    from hypothesis import strategies as st

    from xattn_ref.cases.model import ModelCase
    from xattn_ref.tolerance import Budget

__all__ = ["MODEL_PROPERTIES", "ModelCall", "ModelKind"]

MODEL_PROPERTIES: tuple[str, ...] = (
    "finite_output",
    "finite_grad",
    "padding_invariance",
    "padding_side_invariance",
    "compaction_equivalence",
    "batch_independence",
    "cached_decoding",
    "implementation_consistency",
    "no_input_mutation",
    "dtype_consistency",
    "device_consistency",
)

ARCHS = ("causal", "encoder", "seq2seq")


def _hf_arch(model: Any) -> str:
    config = model.config
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    names = [c.__name__ for c in type(model).__mro__]
    if getattr(config, "is_decoder", False) or any(n.endswith(("ForCausalLM", "LMHeadModel")) for n in names):
        return "causal"
    return "encoder"


def positions_of(mask: torch.Tensor) -> torch.Tensor:
    """Position ids as generation derives them from a mask (1 = a real token): each real token's
    index among the real tokens of its sequence; 1 at padding."""
    import torch

    pos = mask.long().cumsum(-1) - 1
    return torch.where(mask.bool(), pos, torch.ones_like(pos))


class ModelCall(TargetCall):
    """A model bound to the ``model`` kind: ``call(case)`` gives the logits ``(B, L, V)``;
    gradients reach every trainable parameter. :meth:`decode` runs the model's cached decoding,
    :meth:`implementations` its attention implementations."""

    empty_rows = "finite"

    def __init__(
        self,
        fn_for: FnFor,
        *,
        arch: str = "causal",
        positions: str = "mask",
        implementations: tuple[str, ...] = ("eager", "sdpa"),
        sides: tuple[str, ...] = ("right", "left"),
        differentiable: bool = True,
        **settings: Any,
    ) -> None:
        super().__init__(fn_for, differentiable=differentiable, **settings)
        self.arch = arch
        self.positions = positions
        self.implementations_asked = implementations
        self.sides = sides  # the padding sides the model is declared to take

    def _model(self, case: ModelCase) -> Any:
        return self.fn_for(case.dtype, str(case.device))

    def arguments(self, case: ModelCase) -> tuple[dict[str, Any], dict[str, Any]]:
        """A Hugging Face model gets ``input_ids`` by position and the rest by keyword, a language
        model with ``position_ids`` derived from the mask (``--positions mask``) where its forward
        takes them; any other callable gets the case's arguments in order."""
        from xattn_ref.wrapped import accepts

        args: dict[str, Any] = dict(case.arguments())
        fn = self._model(case)
        if not _called_by_keyword(fn) or self.callmap is not None:
            return args, {}
        if self.positions == "mask" and self.arch == "causal" and accepts(fn, "position_ids"):
            args["position_ids"] = positions_of(case.attention_mask)
        return {"input_ids": args.pop("input_ids")}, args

    def __call__(self, case: ModelCase) -> torch.Tensor:
        return self.run(case, *self.arguments(case))

    def run(self, case: ModelCase, args: dict[str, Any], kwargs: dict[str, Any]) -> torch.Tensor:
        return _logits(self.produce(case, args, kwargs), case, self.select)

    def parameters(self, case: ModelCase) -> dict[str, torch.Tensor]:
        return trainable_parameters(self._model(case))

    def budget(self, case: ModelCase, g: torch.Tensor, *, grads: bool) -> Budget:
        from xattn_ref.tolerance import model_budget

        return model_budget(self, case, g, grads=grads)

    # --- cached decoding ---------------------------------------------------------------------

    def decode(self, case: ModelCase) -> torch.Tensor:
        """The logits of the model's own cached decoding: the first ``case.spec.prompt`` positions
        at once, then ``case.spec.chunk`` positions at a time with the cache (the mask so far,
        position ids derived from it), as generation and chunked prefill run. Raises
        :class:`NotTaken` where the model has no cache the gate can drive (only Hugging Face's,
        ``cache=`` or ``past_key_values=``, is)."""
        import torch

        from xattn_ref._calls import invoke
        from xattn_ref.wrapped import inner_model

        fn = self._model(case)
        name = self._cache_argument(fn)
        if name is None:
            if self.arch == "encoder":
                why = "an encoder has no cache to decode with"
            elif self.callmap is not None:
                why = "--call decides this target's arguments, and the gate cannot pass it a cache"
            elif inner_model(fn) is not None and not _called_by_keyword(fn):
                why = ("a plain function over a model: the gate cannot pass it a cache (name the model "
                       "itself, module:model, or a factory of it, to run cached decoding)")
            elif inner_model(fn) is not None:
                why = "this model's forward takes no cache= or past_key_values="
            else:
                why = ("cached decoding drives a Hugging Face model's cache (cache= or past_key_values=, "
                       "use_cache=True); this target has none")
            raise NotTaken(why)
        args, kwargs = self.arguments(case)
        base = {**args, **kwargs}
        stream = "decoder_input_ids" if case.seq2seq else "input_ids"
        mask_name = "decoder_attention_mask" if case.seq2seq else "attention_mask"
        ids, mask = base[stream], base[mask_name]
        steps, cache = [], None
        with grad_mode(self.differentiable):
            for start, stop in case.spec.steps(ids.shape[1]):
                step = {
                    **base,
                    stream: ids[:, start:stop],
                    mask_name: mask[:, :stop],
                    name: cache,
                    "use_cache": True,
                }
                if "position_ids" in base:
                    step["position_ids"] = base["position_ids"][:, start:stop]
                out = invoke(fn, {"input_ids": step.pop("input_ids")}, step)
                cache = getattr(out, name, None) if name == "cache" else None
                cache = cache if cache is not None else getattr(out, "past_key_values", None)
                if cache is None:
                    raise NotTaken("the model returned no cache with use_cache=True")
                steps.append(_logits(out, case, self.select, length=stop - start))
        return torch.cat(steps, dim=1)

    def _cache_argument(self, fn: Any) -> str | None:
        from xattn_ref.wrapped import accepts

        if not _called_by_keyword(fn) or self.arch == "encoder" or self.callmap is not None:
            return None
        for name in ("cache", "past_key_values"):
            if accepts(fn, name):
                return name
        return None

    # --- attention implementations ---------------------------------------------------------

    def implementations(self, case: ModelCase) -> tuple[str, ...]:
        """The attention implementations to compare (none for a model that offers one)."""
        from xattn_ref.wrapped import inner_model

        if not hasattr(inner_model(self._model(case)), "set_attn_implementation"):
            return ()
        return self.implementations_asked

    @contextlib.contextmanager
    def implementation(self, case: ModelCase, name: str) -> Iterator[None]:
        """The model switched to attention implementation ``name`` for the block (and back)."""
        from xattn_ref.wrapped import inner_model

        fn = inner_model(self._model(case))
        was = fn.config._attn_implementation
        try:
            fn.set_attn_implementation(name)
        except Exception as exc:
            first = str(exc).split(". ")[0]
            raise NotTaken(f"the model does not take attn_implementation={name!r}: {first}") from None
        try:
            yield
        finally:
            fn.set_attn_implementation(was)


def _called_by_keyword(fn: Any) -> bool:
    """A Hugging Face model, or a module that wraps one (PEFT, ``torch.compile``, a subclass), is
    called as its users call it, by keyword; a plain function gets the kind's arguments in order."""
    import torch

    from xattn_ref.wrapped import inner_model

    return isinstance(fn, torch.nn.Module) and inner_model(fn) is not None


def _logits(out: Any, case: ModelCase, select: str | None, length: int | None = None) -> torch.Tensor:
    """The logits in what the model returned: ``select`` of it, else ``.logits``, else it (or a
    tuple's first element); checked to be float ``(B, L, V)``."""
    import torch

    if select is None and getattr(out, "logits", None) is not None:
        y = out.logits
    elif select is None and hasattr(out, "to_tuple"):  # a Hugging Face output without logits
        y = out.to_tuple()[0]
    else:
        y = select_output(out, select)
    lead = (case.batch_size, case.judged().shape[1] if length is None else length)
    expected = f"logits (B, L, V) with (B, L) = {lead}, or an object with .logits"
    if not isinstance(y, torch.Tensor):
        raise TargetError(f"the target returned {type(y).__name__}; expected {expected}")
    if y.ndim != 3 or tuple(y.shape[:2]) != lead:
        raise TargetError(f"the target returned shape {tuple(y.shape)}; expected {expected}")
    if not y.is_floating_point():
        raise TargetError(f"the target returned dtype {y.dtype}; expected floating-point logits")
    if y.device != case.device:
        raise TargetError(f"the target returned a tensor on {y.device}; expected {case.device}")
    return y


def _sides(options: dict[str, Any]) -> tuple[str, ...]:
    side = options.get("padding_side") or "both"
    return ("right", "left") if side == "both" else (side,)


class ModelKind(Kind):
    name = "model"
    signature = (
        "fn(input_ids, attention_mask) -> logits (B, L, V) or an object with .logits; attention_mask "
        "(B, L) int64, 1 = real token (encoder-decoders: + decoder_input_ids, decoder_attention_mask)"
    )
    properties = MODEL_PROPERTIES
    options = (
        Option("arch", "causal (a language model), encoder, or seq2seq (an encoder-decoder: "
               "input_ids, attention_mask, decoder_input_ids, decoder_attention_mask); read from a "
               "Hugging Face model's config", type="choice", choices=ARCHS),
        Option("vocab", "V, how many token ids the model takes (read from a Hugging Face model's "
               "config)"),
        Option("max_length", "the longest sequence drawn (default 12; at most a Hugging Face model's "
               "max_position_embeddings): set it past a sliding window to reach its edge"),
        Option("padding_side", "the sides a batch is padded on: both, or right or left only (a model with "
               "absolute positions it derives itself, as BART's encoder, takes right padding only)",
               type="choice", choices=("both", "right", "left"), default="both"),
        Option("positions", "mask: a Hugging Face language model gets position_ids derived from the mask, "
               "as generation passes them; model: it derives its own (encoders always do)", type="choice",
               choices=("mask", "model"), default="mask"),
        Option("implementations", "the attention implementations implementation_consistency compares "
               "(a comma list; a Hugging Face model's set_attn_implementation)", type="text",
               default="eager,sdpa", metavar="NAMES"),
        FORWARD_ONLY,
        *CALL_OPTIONS,
    )  # fmt: skip
    roles = ("input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask")

    def required_roles(self, options: dict[str, Any]) -> tuple[str, ...]:
        return self.roles if options.get("arch") == "seq2seq" else self.roles[:2]

    def complete(self, options: dict[str, Any], fn_for: FnFor) -> None:
        """Fill ``arch``, ``vocab`` and ``max_length`` from a Hugging Face model's config;
        :class:`ValueError` naming the option when a plain callable leaves one open."""
        import torch

        from xattn_ref.wrapped import inner_model

        try:
            fn: Any = inner_model(fn_for(torch.float32, "cpu"))
        except Exception as exc:
            raise ValueError(f"building the model in float32 raised {type(exc).__name__}: {exc}") from None
        if fn is not None:
            config = fn.config
            options["arch"] = options.get("arch") or _hf_arch(fn)
            options["vocab"] = options.get("vocab") or int(config.vocab_size)
            limit = getattr(config, "max_position_embeddings", None) or 12
            options["max_length"] = min(options.get("max_length") or 12, int(limit))
        for name, default in (("arch", "causal"), ("max_length", 12)):
            options[name] = options.get(name) or default
        if not options.get("vocab"):
            raise ValueError(
                "--vocab is required for a model that is not a Hugging Face model (how many token ids it "
                "takes); a model target is fn(input_ids, attention_mask) -> logits (a kernel or a layer: "
                "--kind kernel, layer, encoder)"
            )

    def make_call(self, fn_for: FnFor, options: dict[str, Any], differentiable: bool) -> ModelCall:
        diff = differentiable and not options.get("forward_only", False)
        names = tuple(n.strip() for n in str(options.get("implementations") or "").split(",") if n.strip())
        return ModelCall(
            fn_for,
            arch=options.get("arch") or "causal",
            positions=options.get("positions", "mask"),
            implementations=names,
            sides=_sides(options),
            differentiable=diff,
            **self.call_settings(options),
        )

    def cases(self, options: dict[str, Any], dtype: torch.dtype, device: str) -> st.SearchStrategy[Any]:
        from xattn_ref.strategies.model import model_cases

        return model_cases(
            vocab_size=int(options["vocab"]),
            seq2seq=options.get("arch") == "seq2seq",
            dtypes=[dtype],
            devices=[device],
            max_length=int(options.get("max_length") or 12),
            padding_sides=_sides(options),
        )

    def probe(self, options: dict[str, Any], dtype: torch.dtype, device: str) -> ModelCase:
        from xattn_ref.cases.model import ModelCaseSpec, Stream

        side = "left" if options.get("padding_side") == "left" else "right"
        tokens = Stream(5, (5, 2), side)
        context = Stream(4, (4, 1), side) if options.get("arch") == "seq2seq" else None
        return ModelCaseSpec(2, int(options["vocab"]), tokens, dtype, device, 0, context, 3).build()

    def describe(self, options: dict[str, Any]) -> str:
        arch = options.get("arch") or "causal"
        what = {"causal": "a language model", "encoder": "an encoder", "seq2seq": "an encoder-decoder"}[arch]
        return f"{self.signature}; {what}, V={options.get('vocab')}" + (
            "; forward-only" if options.get("forward_only") else ""
        )
