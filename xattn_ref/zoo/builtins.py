"""The built-in targets of the main job (``xattn-check`` with no target) and of the property suite
without ``--xattn-target``: correct ones, one per kind and kernel dialect, and known failures
that show what a finding looks like, each with the verdict it should get."""

from __future__ import annotations

import dataclasses
import importlib.util
import shlex
from dataclasses import dataclass
from typing import Any

from xattn_ref.kinds import resolve_options
from xattn_ref.targets import Target, load_target

__all__ = ["BUILTINS", "Builtin"]


@dataclass(frozen=True)
class Builtin:
    """A built-in target of the main job and the default suite, with the verdict it should get."""

    spec: str
    kind: str = "kernel"
    options: tuple[tuple[str, Any], ...] = ()
    should_pass: bool = True
    requires: str | None = None  # a module the target needs (an optional dependency)

    def missing(self) -> str | None:
        """Why the target cannot run here (its optional dependency is not installed), or None."""
        if self.requires is None or importlib.util.find_spec(self.requires) is not None:
            return None
        return (
            f"built-in {self.spec} skipped: {self.requires} is not installed (pip install 'xattn_ref[real]')"
        )

    def load(self) -> Target:
        target = load_target(self.spec, self.kind, resolve_options(self.kind, dict(self.options), ""))
        args = target.cli_args()
        if len(args) > 1 and self.kind == "kernel":  # dialect options: the name says them
            target = dataclasses.replace(target, name=shlex.join(args), spec=self.spec)
        return target


_LAYER16 = (("dim", 16), ("context_dim", 16))

_SDPA = "torch.nn.functional:scaled_dot_product_attention"

#: The built-in targets: correct ones (one per kernel dialect), and known failures that show what
#: a finding looks like.
BUILTINS: tuple[Builtin, ...] = (
    Builtin("xattn_ref.zoo.kernels:reference_kernel"),
    Builtin("xattn_ref.zoo.kernels:sdpa_kernel"),
    Builtin("xattn_ref.zoo.kernels:safe_sdpa_kernel"),
    Builtin("xattn_ref.zoo.kernels:sdpa_gqa_kernel", options=(("heads", "gqa"),)),
    Builtin(_SDPA, options=(("mask", "additive"), ("bias", True), ("scale", True))),
    Builtin(_SDPA, options=(("mask", "none"), ("causal", "top_left"))),
    Builtin("xattn_ref.guard:safe_sdpa", options=(("mask", "sentinel"),)),
    Builtin(_SDPA, options=(("mask", "sentinel"), ("empty_rows", "finite"))),
    Builtin(
        "xattn_ref.zoo.kernels:padded_causal_kernel",
        options=(("key_padding", True), ("self_attention", True), ("causal", "top_left")),
    ),
    Builtin("xattn_ref.zoo.kernels:sdpa_inference_kernel", options=(("forward_only", True),)),
    Builtin("xattn_ref.zoo.kernels:varlen_reference_kernel", "varlen"),
    Builtin(
        "transformers.integrations.sdpa_attention:sdpa_attention_forward",
        "hf",
        (("mask", "bool"),),
        requires="transformers",
    ),
    Builtin("xattn_ref.zoo.adapters:transformer_encoder_layer()", "encoder", (("dim", 16),)),
    Builtin("xattn_ref.zoo.known_bad:neg_inf_softmax", should_pass=False),
    Builtin("xattn_ref.zoo.adapters:cross_attention_layer()", "layer", _LAYER16),
    Builtin("xattn_ref.zoo.kernels:mha_layer_need_weights_false()", "layer", _LAYER16),
    Builtin("xattn_ref.zoo.adapters:multihead_attention_layer()", "layer", _LAYER16, should_pass=False),
)
