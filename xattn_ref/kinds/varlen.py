"""The ``varlen`` kind: packed variable-length kernels, ``fn(q, k, v, cu_seqlens_q, cu_seqlens_k,
max_seqlen_q, max_seqlen_k) -> out (total_q, H, Dv)`` (flash-attention's
``flash_attn_varlen_func`` layout); one sequence per batch element, zero-length ones included."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from xattn_ref.dialects import Dialect
from xattn_ref.kinds.base import FnFor, Kind, key_padding_mask
from xattn_ref.kinds.kernel import KernelCall

if TYPE_CHECKING:
    import torch
    from hypothesis import strategies as st

    from xattn_ref.cases import AttentionCase

__all__ = ["VarlenCall", "VarlenKind"]


class VarlenCall(KernelCall):
    """A packed variable-length kernel bound to the ``varlen`` kind: q ``(total_q, H, D)``, k and
    v ``(total_k, H_kv, D)``, out ``(total_q, H, Dv)``. Batch element b of a case is sequence b:
    its Lq queries and its real keys (the case's key padding, right-aligned); a context that is
    all padding is a zero-length sequence."""

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
        from xattn_ref._calls import check_output
        from xattn_ref.conventions import unpack

        out = self.produce(case, args, kwargs)
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


class VarlenKind(Kind):
    name = "varlen"
    signature = (
        "fn(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k) -> out (total_q, H, Dv); "
        "packed (total, H, D), one sequence per batch element, zero-length ones included"
    )
    properties = (
        "finite_output",
        "finite_grad",
        "empty_rows_zero",
        "compaction_equivalence",
        "reference_agreement",
        "batch_independence",
        "no_input_mutation",
        "dtype_consistency",
        "device_consistency",
    )  # no padding: a packed batch has none to vary
    roles = ("q", "k", "v", "cu_seqlens_q", "cu_seqlens_k", "max_seqlen_q", "max_seqlen_k")

    def make_call(self, fn_for: FnFor, options: dict[str, Any], differentiable: bool) -> VarlenCall:
        dialect = Dialect(forward_only=bool(options.get("forward_only", False)))
        settings = self.call_settings(options)
        return VarlenCall(fn_for, dialect=dialect, differentiable=differentiable, **settings)

    def cases(self, options: dict[str, Any], dtype: torch.dtype, device: str) -> st.SearchStrategy[Any]:
        from xattn_ref.strategies import attention_cases

        # each batch element is a sequence: its keys first, padding after; all padding = length 0
        return attention_cases(
            dtypes=[dtype],
            devices=[device],
            mask_layouts=["key_padding"],
            mask_patterns=["all_false", "all_true", "right_padding"],
            allow_no_mask=False,
        )

    def probe(self, options: dict[str, Any], dtype: torch.dtype, device: str) -> AttentionCase:
        from xattn_ref.cases import CaseSpec

        unit = (1.0, 1.0)
        return CaseSpec(2, 2, 3, 5, 8, 8, dtype, device, 0, unit, unit, key_padding_mask()).build()
