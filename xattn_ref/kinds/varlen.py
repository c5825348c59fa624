"""The ``varlen`` kind: packed variable-length kernels, ``fn(q, k, v, cu_seqlens_q, cu_seqlens_k,
max_seqlen_q, max_seqlen_k) -> out (total_q, H, Dv)`` (flash-attention's
``flash_attn_varlen_func`` layout); one sequence per batch element, zero-length ones included."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from xattn_ref.dialects import Dialect
from xattn_ref.errors import Inexpressible
from xattn_ref.kinds.base import CALL_OPTIONS, FORWARD_ONLY, FnFor, Kind, key_padding_mask
from xattn_ref.kinds.kernel import KernelCall
from xattn_ref.options import Option

if TYPE_CHECKING:
    import torch
    from hypothesis import strategies as st

    from xattn_ref.cases import AttentionCase

__all__ = ["TAIL", "VarlenCall", "VarlenKind", "packed_lengths"]

#: The most rows of NaN past ``cu_seqlens[-1]`` in packed q, k, v (``--tail nan``, the default):
#: a case has 0, 1 or 2 of them, by its seed (a failure shrinks toward the case of seed 0: none).
TAIL = 2


class VarlenCall(KernelCall):
    """A packed variable-length kernel bound to the ``varlen`` kind: q ``(total_q, H, D)``, k and
    v ``(total_k, H_kv, D)``, out ``(total_q, H, Dv)``. Batch element b of a case is sequence b:
    its queries and its keys, each first in the case and padding after (:func:`packed_lengths`),
    so sequences have their own numbers of queries and keys, zero included; the output rows of a
    case past a sequence's queries are zeros. With ``tail`` (default :data:`TAIL`), q, k and v run
    up to that many rows past ``cu_seqlens[-1]`` (``spec.seed % (tail + 1)``: drawn with the case,
    shrinking to none), holding NaN, as CUDA-graph padding leaves packed buffers: no output of a
    sequence may depend on them."""

    def __init__(self, fn_for: FnFor, *, tail: int = 0, **settings: Any) -> None:
        super().__init__(fn_for, **settings)
        self.tail = tail

    def arguments(self, case: AttentionCase) -> tuple[dict[str, Any], dict[str, Any]]:
        import torch

        from xattn_ref.conventions import pack

        q_lens, k_lens = packed_lengths(case)
        q, cu_q, max_q = pack(case.q, q_lens)
        k, cu_k, max_k = pack(case.k, k_lens)
        v, _, _ = pack(case.v, k_lens)
        tail = self.tail_rows(case)
        if tail:  # rows past the last sequence, as a reused buffer holds them: NaN
            q, k, v = (torch.cat([t, t.new_full((tail, *t.shape[1:]), torch.nan)]) for t in (q, k, v))
        args = {"q": q, "k": k, "v": v, "cu_seqlens_q": cu_q, "cu_seqlens_k": cu_k}
        return {**args, "max_seqlen_q": max_q, "max_seqlen_k": max_k}, {}

    def tail_rows(self, case: AttentionCase) -> int:
        """The rows of NaN past ``cu_seqlens[-1]`` for ``case`` (0 to ``tail``, by its seed)."""
        return self.tail if case.spec is None else case.spec.seed % (self.tail + 1)

    def describe(self, case: AttentionCase) -> str:
        rows = self.tail_rows(case)
        return f"; packed with {rows} row{'s' * (rows != 1)} of NaN past cu_seqlens[-1]"

    def run(self, case: AttentionCase, args: dict[str, Any], kwargs: dict[str, Any]) -> torch.Tensor:
        from xattn_ref._calls import check_output
        from xattn_ref.conventions import unpack

        out = self.produce(case, args, kwargs)
        # as many rows as q (flash_attn_varlen_func's, tail included) or up to cu_seqlens_q[-1]
        rows = {int(args["q"].shape[0]), int(args["cu_seqlens_q"][-1])}
        expected = (case.q.shape[1], case.v.shape[-1])
        out = check_output(
            out,
            case.q,
            lambda t: t.ndim == 3 and t.shape[0] in rows and tuple(t.shape[1:]) == expected,
            f"(total_q, H, Dv) = ({' or '.join(map(str, sorted(rows)))}, {expected[0]}, {expected[1]})",
        )
        # the tail's rows are no sequence's: left out
        return unpack(out[: int(args["cu_seqlens_q"][-1])], args["cu_seqlens_q"], case.q.shape[2])

    def snippet(self) -> str:
        return (
            "from xattn_ref.kinds import VarlenCall\n"
            f"args, _ = VarlenCall(lambda *_: fn, tail={self.tail}).arguments(case)  # packed; cu_seqlens\n"
            "out = fn(*args.values())  # (total_q, H, Dv)"
        )


def packed_lengths(case: AttentionCase) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sequence's number of queries and of keys: its mask must allow its first ``q_len``
    queries its first ``k_len`` keys and nothing else, the same for every head
    (:class:`~xattn_ref.errors.Inexpressible` otherwise). Where the case's spec says more than the
    mask can (a sequence with queries and no key: a key-padding slice keeps every query; a
    ``packed`` slice says its own), the spec's numbers are taken."""
    import torch

    b, h, lq, lk = case.q.shape[0], case.q.shape[1], case.q.shape[2], case.k.shape[2]
    if case.mask is None:
        return torch.full((b,), lq, dtype=torch.int64), torch.full((b,), lk, dtype=torch.int64)
    m = case.full_mask.cpu()
    if not bool((m == m[:, :1]).all()):
        raise Inexpressible("a packed kernel takes one mask per sequence, the same for every head")
    m = m[:, 0]
    q_lens, k_lens = m.any(-1).sum(-1), m.any(-2).sum(-1)
    spec = getattr(getattr(case, "spec", None), "mask", None)
    full = case.full_mask.cpu()
    if spec is not None and torch.equal(spec.build(b, h, lq, lk).expand(full.shape), full):
        for n, s in enumerate(spec.slices[:b] if spec.layout in ("key_padding", "query_key") else ()):
            if spec.layout == "key_padding":
                q_lens[n] = lq
            elif s.name == "packed":
                q_lens[n] = lq - s.empty_rows
    rows = torch.arange(lq) < q_lens.unsqueeze(-1)
    keys = torch.arange(lk) < k_lens.unsqueeze(-1)
    if not bool((m == (rows[:, :, None] & keys[:, None, :])).all()):
        raise Inexpressible("a packed kernel needs each sequence's queries and keys first, padding after")
    return q_lens, k_lens


class VarlenKind(Kind):
    name = "varlen"
    signature = (
        "fn(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k) -> out (total_q, H, Dv); "
        "packed (total, H, D), one sequence per batch element, each its own numbers of queries and keys "
        "(zero included)"
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

    options = (
        Option("tail", "nan: q, k and v run up to 2 rows past cu_seqlens[-1], holding NaN (CUDA-graph "
               "padding of a reused buffer); none: the kernel's contract forbids a tail", type="choice",
               choices=("nan", "none"), default="nan"),
        FORWARD_ONLY,
        *CALL_OPTIONS,
    )  # fmt: skip

    def make_call(self, fn_for: FnFor, options: dict[str, Any], differentiable: bool) -> VarlenCall:
        dialect = Dialect(forward_only=bool(options.get("forward_only", False)))
        settings = self.call_settings(options)
        tail = TAIL if options.get("tail", "nan") == "nan" else 0
        return VarlenCall(fn_for, dialect=dialect, differentiable=differentiable, tail=tail, **settings)

    def describe(self, options: dict[str, Any]) -> str:
        nan = options.get("tail", "nan") == "nan"
        tail = "; a NaN tail of up to 2 rows past cu_seqlens[-1]" if nan else ""
        return self.signature + tail + ("; forward-only" if options.get("forward_only") else "")

    def cases(self, options: dict[str, Any], dtype: torch.dtype, device: str) -> st.SearchStrategy[Any]:
        from xattn_ref.strategies import attention_cases

        # each batch element is a sequence, as servers pack them: its own number of queries (a
        # whole prefill, one to decode, none) and of keys (none included), each first
        return attention_cases(
            dtypes=[dtype],
            devices=[device],
            mask_layouts=["query_key"],  # packed in half the sequences; where every sequence has
            # all its queries, the case is a key-padding one too, and compactable
            mask_patterns=["packed", "all_true", "packed", "right_padding", "packed", "all_false"],
            allow_no_mask=False,
        )

    def probe(self, options: dict[str, Any], dtype: torch.dtype, device: str) -> AttentionCase:
        from xattn_ref.cases import CaseSpec

        unit = (1.0, 1.0)
        return CaseSpec(
            batch_size=2,
            num_heads=2,
            q_len=3,
            kv_len=5,
            head_dim=8,
            value_dim=8,
            dtype=dtype,
            device=device,
            seed=0,
            logit_std=unit,
            value_std=unit,
            mask=key_padding_mask(),
        ).build()
