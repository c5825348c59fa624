"""The kinds' calls: a target bound to its kind (:class:`KernelCall`, :class:`HFCall`,
:class:`VarlenCall`, :class:`LayerCall`, :class:`EncoderCall`) builds the call's arguments
from a case, runs the target and checks its output; the checks run every property through
them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from xattn_ref.cases import AttentionCase, LayerCase
    from xattn_ref.dialects import Dialect
    from xattn_ref.tolerance import Budget

__all__ = [
    "EncoderCall",
    "FnFor",
    "HFCall",
    "KernelCall",
    "LayerCall",
    "VarlenCall",
    "kernel_call",
    "layer_call",
]

#: ``fn_for(dtype, device)``: the target's callable for one dtype and device (a module copy, or
#: the product of a factory that takes them).
FnFor = Callable[["torch.dtype", str], Callable[..., Any]]


class KernelCall:
    """A kernel bound to its kind: ``call(case)`` runs ``fn(q, k, v, mask, **kw)`` as its
    dialect says and checks that the output is ``(B, H, Lq, Dv)`` in the inputs' dtype and
    device."""

    def __init__(self, fn_for: FnFor, *, dialect: Dialect | None = None, differentiable: bool = True) -> None:
        from xattn_ref.dialects import Dialect

        self.fn_for = fn_for
        self.dialect = Dialect() if dialect is None else dialect
        self.differentiable = differentiable and not self.dialect.forward_only
        self.empty_rows = self.dialect.empty_rows

    def arguments(self, case: AttentionCase) -> tuple[dict[str, Any], dict[str, Any]]:
        """The positional (by name) and keyword arguments of the call, in the kernel's dialect."""
        return self.dialect.arguments(case)

    def __call__(self, case: AttentionCase) -> torch.Tensor:
        return self.run(case, *self.arguments(case))

    def snippet(self) -> str:
        """Python that calls the kernel ``fn`` on ``case`` as this call does."""
        return self.dialect.snippet()

    def run(self, case: AttentionCase, args: dict[str, Any], kwargs: dict[str, Any]) -> torch.Tensor:
        """The kernel on these arguments (made from ``case``), its output checked."""
        from xattn_ref._calls import check_output, invoke

        with _grad_mode(self.differentiable):
            out = invoke(self.fn_for(case.dtype, str(case.device)), args, kwargs)
        expected = (case.q.shape[0], case.q.shape[1], case.q.shape[2], case.v.shape[-1])
        return check_output(out, case.q, lambda t: tuple(t.shape) == expected, f"(B, H, Lq, Dv) = {expected}")

    def parameters(self, case: AttentionCase) -> dict[str, torch.Tensor]:
        return {}

    def budget(self, case: AttentionCase, g: torch.Tensor, *, grads: bool) -> Budget:
        from xattn_ref.tolerance import kernel_budget

        return kernel_budget(case, g, grads=grads)


class HFCall(KernelCall):
    """A Hugging Face attention function bound to the ``hf`` kind: ``fn(module, query, key, value,
    attention_mask, scaling=s, dropout=0.0[, is_causal=True]) -> (out, weights)`` with ``out``
    ``(B, Lq, H, Dv)``; ``module.num_key_value_groups`` says H // H_kv (:func:`adapters.hf_module`)."""

    def arguments(self, case: AttentionCase) -> tuple[dict[str, Any], dict[str, Any]]:
        from xattn_ref.conventions import hf_module

        args, kwargs = self.dialect.arguments(case)
        causal = bool(kwargs.pop("is_causal", False))
        module = hf_module(case.groups, is_causal=causal)
        call_kwargs: dict[str, Any] = {"scaling": case.effective_scale, "dropout": 0.0}
        if causal:
            call_kwargs["is_causal"] = True
        named = {"module": module, "query": args["q"], "key": args["k"], "value": args["v"]}
        mask = args["mask"]
        if mask is not None and mask.ndim < 4:  # Hugging Face masks are 4-D
            mask = mask.reshape((1,) * (4 - mask.ndim) + tuple(mask.shape))
        return {**named, "attention_mask": mask}, call_kwargs

    def run(self, case: AttentionCase, args: dict[str, Any], kwargs: dict[str, Any]) -> torch.Tensor:
        from xattn_ref._calls import check_output, invoke

        out = invoke(self.fn_for(case.dtype, str(case.device)), args, kwargs)
        if isinstance(out, tuple) and out:
            out = out[0]
        b, h, lq, dv = case.q.shape[0], case.q.shape[1], case.q.shape[2], case.v.shape[-1]
        expected = (b, lq, h, dv)
        out = check_output(out, case.q, lambda t: tuple(t.shape) == expected, f"(B, Lq, H, Dv) = {expected}")
        return out.transpose(1, 2)

    def snippet(self) -> str:
        return (
            "from xattn_ref.dialects import Dialect\nfrom xattn_ref.kinds import HFCall\n"
            f"args, kwargs = HFCall(lambda *_: fn, dialect={self.dialect!r}).arguments(case)\n"
            "out, weights = fn(*args.values(), **kwargs)  # out: (B, Lq, H, Dv)"
        )


class VarlenCall(KernelCall):
    """A packed variable-length kernel bound to the ``varlen`` kind: ``fn(q, k, v, cu_seqlens_q,
    cu_seqlens_k, max_seqlen_q, max_seqlen_k) -> out`` with q ``(total_q, H, D)``, k and v
    ``(total_k, H_kv, D)``, out ``(total_q, H, Dv)`` (flash-attention's ``flash_attn_varlen_func``
    layout). Batch element b of a case is sequence b: its Lq queries and its real keys (the
    case's key padding, right-aligned); a context that is all padding is a zero-length sequence."""

    def arguments(self, case: AttentionCase) -> tuple[dict[str, Any], dict[str, Any]]:
        import torch

        from xattn_ref.conventions import pack
        from xattn_ref.errors import Inexpressible

        b, lq, lk = case.q.shape[0], case.q.shape[2], case.k.shape[2]
        if case.mask is None:
            k_lens = torch.full((b,), lk, dtype=torch.int64)
        else:
            rows = case.full_mask[:, 0, 0, :].cpu()
            k_lens = rows.sum(-1)
            prefix = torch.arange(lk) < k_lens.unsqueeze(-1)
            if not bool((case.full_mask == prefix.to(case.device)[:, None, None, :]).all()):
                raise Inexpressible("a packed kernel needs right-padded key-padding masks")
        q, cu_q, max_q = pack(case.q, torch.full((b,), lq, dtype=torch.int64))
        k, cu_k, max_k = pack(case.k, k_lens)
        v, _, _ = pack(case.v, k_lens)
        args = {"q": q, "k": k, "v": v, "cu_seqlens_q": cu_q, "cu_seqlens_k": cu_k}
        return {**args, "max_seqlen_q": max_q, "max_seqlen_k": max_k}, {}

    def run(self, case: AttentionCase, args: dict[str, Any], kwargs: dict[str, Any]) -> torch.Tensor:
        from xattn_ref._calls import check_output, invoke
        from xattn_ref.conventions import unpack

        out = invoke(self.fn_for(case.dtype, str(case.device)), args, kwargs)
        expected = (int(args["q"].shape[0]), case.q.shape[1], case.v.shape[-1])
        out = check_output(
            out, case.q, lambda t: tuple(t.shape) == expected, f"(total_q, H, Dv) = {expected}"
        )
        return unpack(out, args["cu_seqlens_q"], case.q.shape[2])

    def snippet(self) -> str:
        return (
            "from xattn_ref.kinds import VarlenCall\n"
            "args, _ = VarlenCall(lambda *_: fn).arguments(case)  # packed q, k, v, cu_seqlens, max_seqlen\n"
            "out = fn(*args.values())  # (total_q, H, Dv)"
        )


class LayerCall:
    """A layer bound to its kind: ``call(case)`` runs ``fn(x, context, context_mask)``; gradients
    reach x, context and every trainable parameter."""

    def __init__(self, fn_for: FnFor, dim: int, context_dim: int, *, differentiable: bool = True) -> None:
        self.fn_for = fn_for
        self.dim = dim
        self.context_dim = context_dim
        self.differentiable = differentiable
        self.empty_rows = "zero"

    def arguments(self, case: LayerCase) -> tuple[dict[str, Any], dict[str, Any]]:
        return dict(case.arguments()), {}

    def __call__(self, case: LayerCase) -> torch.Tensor:
        return self.run(case, *self.arguments(case))

    def run(self, case: LayerCase, args: dict[str, Any], kwargs: dict[str, Any]) -> torch.Tensor:
        from xattn_ref._calls import check_output, invoke

        with _grad_mode(self.differentiable):
            y = invoke(self.fn_for(case.dtype, str(case.device)), args, kwargs)
        if isinstance(y, tuple) and y:
            y = y[0]
        lead = tuple(case.x.shape[:2])
        return check_output(
            y,
            case.x,
            lambda t: t.ndim == 3 and tuple(t.shape[:2]) == lead,
            f"(B, {self.length_name}, E_out) with (B, {self.length_name}) = {lead} (or a tuple whose first "
            "element is one)",
        )

    length_name = "Lq"  # how the output's length is named in errors

    def parameters(self, case: LayerCase) -> dict[str, torch.Tensor]:
        import torch

        fn = self.fn_for(case.dtype, str(case.device))
        if not isinstance(fn, torch.nn.Module):
            return {}
        return {n: p for n, p in fn.named_parameters() if p.requires_grad}

    def budget(self, case: LayerCase, g: torch.Tensor, *, grads: bool) -> Budget:
        from xattn_ref.tolerance import layer_budget

        return layer_budget(self, case, self.dim + self.context_dim + case.context.shape[1], g, grads=grads)


class EncoderCall(LayerCall):
    """A self-attention layer bound to the ``encoder`` kind: ``call(case)`` runs ``fn(x, mask)``
    (mask ``(B, L)``, True = a real token) and checks that y is ``(B, L, E_out)`` (or a tuple whose
    first element is); gradients reach x and every trainable parameter."""

    length_name = "L"

    def __init__(self, fn_for: FnFor, dim: int, *, differentiable: bool = True) -> None:
        super().__init__(fn_for, dim, dim, differentiable=differentiable)

    def budget(self, case: Any, g: torch.Tensor, *, grads: bool) -> Budget:
        from xattn_ref.tolerance import layer_budget

        return layer_budget(self, case, 2 * self.dim + case.x.shape[1], g, grads=grads)


def _grad_mode(differentiable: bool) -> Any:
    """Forward-only targets run as inference does, under ``torch.no_grad()`` (where fast paths
    such as ``nn.TransformerEncoderLayer``'s take over)."""
    import contextlib

    import torch

    return contextlib.nullcontext() if differentiable else torch.no_grad()


def _fixed(fn: Callable[..., Any]) -> FnFor:
    return lambda dtype, device: fn


def kernel_call(
    fn: Callable[..., Any], *, dialect: Dialect | None = None, differentiable: bool = True
) -> KernelCall:
    """A kernel function as a call, to run the checks of :mod:`xattn_ref.checks` directly."""
    return KernelCall(_fixed(fn), dialect=dialect, differentiable=differentiable)


def layer_call(fn: Callable[..., Any], dim: int, context_dim: int | None = None) -> LayerCall:
    """A layer callable as a call (it is used as given in every dtype)."""
    return LayerCall(_fixed(fn), dim, context_dim or dim)
