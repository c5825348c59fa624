"""Targets: the attention under test, loaded from ``package.module:name`` or ``file.py:name``.

A spec is looked up as ``python -m`` does (the current folder is on the path), and a file
target can import the modules beside it. ``name()`` calls a factory: once, or once per dtype
and device when it takes ``dtype`` and ``device`` keyword arguments (so a factory can build a
module, and wrap it in a lambda, in each dtype). An ``nn.Module`` is copied to each dtype and
device and put in eval mode. The kinds (``kernel``, ``layer``) are declared in
:mod:`xattn_ref.kinds`.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib
import importlib.util
import inspect
import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from xattn_ref import reference
from xattn_ref.errors import TargetLoadError, UsageError
from xattn_ref.kinds import KINDS, resolve_options

__all__ = [
    "BUILTINS",
    "Builtin",
    "Target",
    "as_target",
    "load_target",
    "mha_layer_need_weights_false",
    "eager_kernel",
    "flash_backward",
    "flash_backward_kernel",
    "online_softmax_kernel",
    "reference_kernel",
    "padded_causal_kernel",
    "padded_sequence_kernel",
    "safe_sdpa_kernel",
    "sdpa_gqa_kernel",
    "sdpa_inference_kernel",
    "varlen_reference_kernel",
    "sdpa_kernel",
]


def reference_kernel(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """:func:`xattn_ref.reference.attention`."""
    return reference.attention(q, k, v, mask)


def sdpa_kernel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``torch.nn.functional.scaled_dot_product_attention`` with the bool mask as ``attn_mask``."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def sdpa_gqa_kernel(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, **kwargs: Any
) -> torch.Tensor:
    """``scaled_dot_product_attention(q, k, v, mask, enable_gqa=True, **kwargs)``: k and v may
    have fewer heads than q (grouped-query attention). Run it with ``--heads gqa``."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True, **kwargs)


def padded_causal_kernel(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, is_causal: bool = False
) -> torch.Tensor:
    """Self-attention as batched generation calls it: a ``(B, L)`` padding mask (True = a real
    token; left or right padding) and ``is_causal=True`` (top-left), combined into one bool mask
    for :func:`xattn_ref.guard.safe_sdpa`. Padded query rows allow no key and give zeros."""
    from xattn_ref.guard import safe_sdpa

    allowed = None if mask is None else mask[:, None, None, :]
    if is_causal:
        lq, lk = q.shape[2], k.shape[2]
        tri = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril()
        allowed = tri if allowed is None else allowed & tri
    return safe_sdpa(q, k, v, attn_mask=allowed)


def varlen_reference_kernel(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
) -> torch.Tensor:
    """A packed variable-length kernel (``flash_attn_varlen_func``'s layout) written plainly: each
    sequence on its own with the guarded reference; a zero-length key sequence gives zeros.
    Run it with ``--kind varlen``."""
    outs = []
    for i in range(cu_seqlens_q.shape[0] - 1):
        qs = q[int(cu_seqlens_q[i]) : int(cu_seqlens_q[i + 1])].transpose(0, 1).unsqueeze(0)
        ks = k[int(cu_seqlens_k[i]) : int(cu_seqlens_k[i + 1])].transpose(0, 1).unsqueeze(0)
        vs = v[int(cu_seqlens_k[i]) : int(cu_seqlens_k[i + 1])].transpose(0, 1).unsqueeze(0)
        if ks.shape[2] == 0:  # no key: the guarded result is zero
            outs.append(qs.new_zeros(qs.shape[2], qs.shape[1], vs.shape[-1]) + 0 * qs.sum())
            continue
        outs.append(F.scaled_dot_product_attention(qs, ks, vs, enable_gqa=True)[0].transpose(0, 1))
    return torch.cat(outs) if outs else q.new_zeros(0, q.shape[1], v.shape[-1])


def padded_sequence_kernel(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """Self-attention as an encoder calls it: a ``(B, L)`` padding mask (True = a real token) that
    pads queries and keys alike, so a padded query allows no key and gives zeros
    (:func:`xattn_ref.guard.safe_sdpa`). Run it with ``--key-padding --self-attention
    --query-padding``."""
    from xattn_ref.guard import safe_sdpa

    allowed = None if mask is None else mask[:, None, :, None] & mask[:, None, None, :]
    return safe_sdpa(q, k, v, attn_mask=allowed)


def sdpa_inference_kernel(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """SDPA under ``torch.inference_mode()``, as a serving stack calls it: not differentiable,
    so run it with ``--forward-only``."""
    with torch.inference_mode():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def safe_sdpa_kernel(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """:func:`xattn_ref.guard.safe_sdpa` with the bool mask as ``attn_mask``."""
    from xattn_ref.guard import safe_sdpa

    return safe_sdpa(q, k, v, attn_mask=mask)


def eager_kernel(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """A correct kernel as model code writes it (Hugging Face's eager attention): the scores
    ``q @ k^T * scale`` rounded to the input dtype twice, the softmax in float32 (float64 for
    float64 inputs) cast back, ``P @ v`` in the input dtype; rows with no allowed key 0. With
    logits of hundreds, a bfloat16 score is off by whole units: a tolerance model that is only
    first-order in the logits' errors fails it there."""
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    s = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    p = s.to(acc).softmax(-1).nan_to_num(0.0).to(q.dtype)  # an empty row: NaN, then 0
    out: torch.Tensor = p @ v
    return out


class _FlashBackward(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Any, lse_dtype: Any
    ) -> Any:
        out = online_softmax_kernel(q, k, v, mask)
        ctx.save_for_backward(q, k, v, out)
        ctx.mask, ctx.lse_dtype = mask, lse_dtype
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> Any:
        q, k, v, out = ctx.saved_tensors
        acc = torch.float64 if q.dtype == torch.float64 else torch.float32
        qa, ka, va, ga, oa = (t.to(acc) for t in (q, k, v, g, out))
        scale = q.shape[-1] ** -0.5
        s = scale * (qa @ ka.transpose(-2, -1))
        allowed = torch.ones_like(s, dtype=torch.bool) if ctx.mask is None else ctx.mask.expand(s.shape)
        lse = torch.where(allowed, s, -torch.inf).logsumexp(-1, keepdim=True)
        lse = lse.to(ctx.lse_dtype or acc).to(acc)
        p = torch.where(allowed, torch.exp(s - torch.where(lse.isfinite(), lse, 0.0)), 0.0)
        ds = p * (ga @ va.transpose(-2, -1) - (ga * oa).sum(-1, keepdim=True))
        dq, dk, dv = scale * (ds @ ka), scale * (ds.transpose(-2, -1) @ qa), p.transpose(-2, -1) @ ga
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None


def flash_backward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    *,
    lse_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """:func:`online_softmax_kernel` with flash-attention's backward written out: the weights
    recomputed from the forward's logsumexp, ``P = exp(S - lse)``, kept in ``lse_dtype``
    (default: the accumulator's, float32, as flash-attention, xformers and cuDNN keep it), and
    ``delta = rowsum(g * out)``."""
    return _FlashBackward.apply(q, k, v, mask, lse_dtype)  # type: ignore[no-any-return, no-untyped-call]


def flash_backward_kernel(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """A third correct kernel: :func:`flash_backward` with a float32 logsumexp."""
    return flash_backward(q, k, v, mask)


def online_softmax_kernel(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """A second correct kernel, written differently: flash-style online softmax over chunks of 16
    keys, accumulated in float32 (float64 for float64 inputs), rows with no allowed key exactly
    0. The no-false-failure sweep runs it beside SDPA and the reference."""
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    qa, ka, va = (t.to(acc) for t in (q, k, v))
    b, h, lq, lk = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
    allowed = torch.ones(b, h, lq, lk, dtype=torch.bool, device=q.device) if mask is None else mask
    allowed = allowed.expand(b, h, lq, lk)
    top = torch.full((b, h, lq, 1), -torch.inf, dtype=acc, device=q.device)
    total = torch.zeros(b, h, lq, 1, dtype=acc, device=q.device)
    out = torch.zeros(b, h, lq, v.shape[-1], dtype=acc, device=q.device)
    for j in range(0, lk, 16):
        s = qa @ ka[:, :, j : j + 16].transpose(-2, -1) * q.shape[-1] ** -0.5
        m = allowed[..., j : j + 16]
        s = torch.where(m, s, -torch.inf)
        new_top = torch.maximum(top, s.amax(-1, keepdim=True))
        safe_top = torch.where(new_top.isfinite(), new_top, 0.0)
        e = torch.where(m, torch.exp(s - safe_top), 0.0)
        rescale = torch.where(top.isfinite(), torch.exp(top - safe_top), 0.0)
        total = total * rescale + e.sum(-1, keepdim=True)
        out = out * rescale + e @ va[:, :, j : j + 16]
        top = new_top
    return (out / torch.where(total > 0, total, 1.0)).to(q.dtype)


def mha_layer_need_weights_false() -> torch.nn.Module:
    """``nn.MultiheadAttention(16, 2)`` called with ``need_weights=False`` (SDPA's guarded path)."""
    from xattn_ref.adapters import multihead_attention_layer

    return multihead_attention_layer(16, 2, need_weights=False)


@dataclass(frozen=True, eq=False)
class Target:
    """An attention under test.

    - ``name``: the spec as given (``xattn-check NAME`` runs it again), or for a built-in target
      with dialect options, the spec and those options (unique in the main job);
    - ``kind``: a key of :data:`xattn_ref.kinds.KINDS`;
    - ``options``: the kind's options (a layer's ``dim`` and ``context_dim``);
    - ``obj``: the callable, or the factory when ``factory`` is True.
    """

    name: str
    kind: str
    obj: Any
    options: dict[str, Any] = field(default_factory=dict)
    factory: bool = False
    spec: str | None = None  # the spec, when ``name`` is not it

    @functools.cached_property
    def _per_dtype_factory(self) -> bool:
        if not self.factory:
            return False
        try:
            params = inspect.signature(self.obj).parameters
        except (TypeError, ValueError):
            return False
        return "dtype" in params and "device" in params

    @functools.cached_property
    def _made(self) -> Any:
        return self.obj() if self.factory and not self._per_dtype_factory else self.obj

    @functools.cache  # noqa: B019 (one per target, kept for the run)
    def fn_for(self, dtype: torch.dtype, device: str) -> Callable[..., Any]:
        """The callable for one dtype and device."""
        if self._per_dtype_factory:
            return self.obj(dtype=dtype, device=device)  # type: ignore[no-any-return]
        made = self._made
        if isinstance(made, torch.nn.Module):
            return copy.deepcopy(made).to(device=device, dtype=dtype).eval()
        return made  # type: ignore[no-any-return]

    @functools.cached_property
    def call(self) -> Any:
        """The target bound to its kind (:class:`xattn_ref.kinds.KernelCall` or ``LayerCall``)."""
        return KINDS[self.kind].make_call(self.fn_for, self.options, True)

    def cli_args(self) -> tuple[str, ...]:
        """The ``xattn-check`` arguments that name this target, its kind and its options."""
        args = [self.spec or self.name]
        if self.kind != "kernel":
            args += ["--kind", self.kind]
        for option in KINDS[self.kind].options:
            if option.name in self.options:
                args += option.cli_args(self.options[option.name])
        return tuple(args)

    @property
    def signature(self) -> str:
        """How the target is called: its kind's signature in its dialect, one line."""
        kind = KINDS[self.kind]
        return kind.describe(self.options) or kind.signature

    def command(self) -> str:
        return shlex.join(("xattn-check", *self.cli_args()))


def as_target(
    fn: Callable[..., Any], *, kind: str = "kernel", name: str | None = None, **options: Any
) -> Target:
    """A target of a callable you hold (``options``: the kind's, e.g. ``dim=16`` for a layer), to
    run properties in-process: ``run_property(as_target(my_kernel), "finite_output", ...)``."""
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    try:
        resolved = resolve_options(kind, options, prefix="")
    except UsageError as exc:
        raise TypeError(str(exc)) from None
    return Target(name or str(getattr(fn, "__name__", type(fn).__name__)), kind, fn, resolved)


def _import(module: str) -> Any:
    if module.endswith(".py") or "/" in module or "\\" in module:
        path = Path(module)
        if not path.is_file():
            raise TargetLoadError(f"target file {module!r} does not exist")
        folder = str(path.resolve().parent)
        if folder not in sys.path:  # the file may import the modules beside it
            sys.path.insert(0, folder)
        name = f"_xattn_target_{path.stem}"
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise TargetLoadError(f"target file {module!r} cannot be imported as Python")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        try:
            spec.loader.exec_module(mod)
        except Exception as exc:
            del sys.modules[name]
            raise TargetLoadError(f"importing {module!r} raised {type(exc).__name__}: {exc}") from exc
        return mod
    if os.getcwd() not in sys.path and "" not in sys.path:  # as `python -m` does
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise TargetLoadError(f"module {module!r} not found ({exc})") from exc
    except Exception as exc:
        raise TargetLoadError(f"importing {module!r} raised {type(exc).__name__}: {exc}") from exc


def load_target(spec: str, kind: str = "kernel", options: dict[str, Any] | None = None) -> Target:
    """``'package.module:name'`` or ``'path/to/file.py:name'``; ``name()`` is a factory. ``options``
    are the kind's (see :func:`resolve_options`). Raises :class:`TargetLoadError`."""
    shape = "must look like 'package.module:name' or 'path/to/file.py:name'"
    if not isinstance(spec, str) or ":" not in spec:
        raise TargetLoadError(f"target {spec!r} {shape}")
    if kind not in KINDS:
        raise TargetLoadError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    module, _, attr = spec.rpartition(":")
    factory = attr.endswith("()")
    attr = attr.removesuffix("()")
    if not module or not attr:
        raise TargetLoadError(f"target {spec!r} {shape}")
    obj: Any = _import(module)
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise TargetLoadError(f"{module!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        what = "a callable factory" if factory else f"callable; expected {KINDS[kind].signature}"
        raise TargetLoadError(f"{spec!r} is {type(obj).__name__}, not {what}")
    target = Target(spec, kind, obj, dict(options or {}), factory)
    if factory and not target._per_dtype_factory:
        try:
            made = target._made
        except Exception as exc:
            raise TargetLoadError(f"{spec!r}: the factory raised {type(exc).__name__}: {exc}") from exc
        if not callable(made):
            raise TargetLoadError(f"{spec!r}: the factory returned {type(made).__name__}, not a callable")
    return target


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
    Builtin("xattn_ref.targets:reference_kernel"),
    Builtin("xattn_ref.targets:sdpa_kernel"),
    Builtin("xattn_ref.targets:safe_sdpa_kernel"),
    Builtin("xattn_ref.targets:sdpa_gqa_kernel", options=(("heads", "gqa"),)),
    Builtin(_SDPA, options=(("mask", "additive"), ("bias", True), ("scale", True))),
    Builtin(_SDPA, options=(("mask", "none"), ("causal", "top_left"))),
    Builtin("xattn_ref.guard:safe_sdpa", options=(("mask", "sentinel"),)),
    Builtin(_SDPA, options=(("mask", "sentinel"), ("empty_rows", "finite"))),
    Builtin(
        "xattn_ref.targets:padded_causal_kernel",
        options=(("key_padding", True), ("self_attention", True), ("causal", "top_left")),
    ),
    Builtin("xattn_ref.targets:sdpa_inference_kernel", options=(("forward_only", True),)),
    Builtin("xattn_ref.targets:varlen_reference_kernel", "varlen"),
    Builtin(
        "transformers.integrations.sdpa_attention:sdpa_attention_forward",
        "hf",
        (("mask", "bool"),),
        requires="transformers",
    ),
    Builtin("xattn_ref.adapters:transformer_encoder_layer()", "encoder", (("dim", 16),)),
    Builtin("xattn_ref.known_bad:neg_inf_softmax", should_pass=False),
    Builtin("xattn_ref.adapters:cross_attention_layer()", "layer", _LAYER16),
    Builtin("xattn_ref.targets:mha_layer_need_weights_false()", "layer", _LAYER16),
    Builtin("xattn_ref.adapters:multihead_attention_layer()", "layer", _LAYER16, should_pass=False),
)
