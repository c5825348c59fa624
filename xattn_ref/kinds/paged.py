"""The ``paged`` kind: attention over a KV cache in pages, ``fn(q, k_cache, v_cache, block_table,
seqlens_k) -> out (B, Lq, H, Dv)``, as flash-attention's ``flash_attn_with_kvcache`` and the
serving engines' decode and chunked-prefill kernels take it:

- q ``(B, Lq, H, D)``: each sequence's newest Lq tokens (a decode step, or a chunk at an offset);
- k_cache ``(num_blocks, block_size, H_kv, D)``, v_cache ``(num_blocks, block_size, H_kv, Dv)``:
  physical pages, in no particular order; query head h reads kv head ``h // (H / H_kv)``
  (``--cache-layout hnd``: ``(num_blocks, H_kv, block_size, D)``, FlashInfer's HND layout);
- block_table ``(B, max_blocks)`` int32: sequence b's logical block i lies in page
  ``block_table[b, i]``;
- seqlens_k ``(B,)`` int32: sequence b's keys, the queries' own included; query i sits at
  position ``seqlens_k[b] - Lq + i`` and attends to the keys up to it (causal, bottom-right);
  a query before the sequence's start (``seqlens_k[b] < Lq``) attends to none and outputs zeros;
- ``--table csr`` (FlashInfer's) passes ``kv_indptr`` ``(B + 1,)``, ``kv_indices`` (every
  sequence's pages in a row) and ``kv_last_page_len`` ``(B,)`` (its last page's keys, 1 to
  block_size; 0 for a sequence with none), all int32, instead of block_table and seqlens_k.

Every slot that holds no key of a sequence (past ``seqlens_k`` in its last page, the pages no
sequence uses, the block table's entries past a sequence's last block, which point at such a
page) holds NaN (``--poison none``: zeros), as a reused cache holds garbage. Pages are placed at
random (seeded by the case), so no result may depend on where a page lies. Sequences that share
a prompt (most cases of two or more) share its pages, as prefix caching and forked sequences
do: a shorter sequence's last page may then hold a longer one's keys past its own (not poison),
and no sequence's result may depend on another reading the same page.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from xattn_ref.dialects import Dialect
from xattn_ref.errors import Inexpressible
from xattn_ref.kinds.base import CALL_OPTIONS, FnFor, Kind
from xattn_ref.kinds.kernel import KernelCall
from xattn_ref.options import Option

if TYPE_CHECKING:
    import torch
    from hypothesis import strategies as st

    from xattn_ref.cases import AttentionCase

__all__ = ["PAGE_SIZES", "PagedCall", "PagedKind", "cached_lengths"]

#: Page sizes a case is laid out in (``--block-size 0``, the default, picks one by the case's
#: seed): 16 (vLLM's default), one key a page, and sizes off any tile edge.
PAGE_SIZES: tuple[int, ...] = (16, 1, 3, 5)


class PagedCall(KernelCall):
    """A paged-cache kernel bound to the ``paged`` kind (see the module docstring): each batch
    element of a case is one sequence whose mask is a ``cached`` slice (its keys first, its
    queries the last of them); the call lays its keys and values out in pages."""

    def __init__(
        self,
        fn_for: FnFor,
        *,
        block_size: int = 0,
        poison: bool = True,
        cache_layout: str = "nhd",
        table: str = "block_table",
        **settings: Any,
    ) -> None:
        super().__init__(fn_for, **settings)
        self.block_size, self.poison, self.cache_layout, self.table = block_size, poison, cache_layout, table

    def arguments(self, case: AttentionCase) -> tuple[dict[str, Any], dict[str, Any]]:
        import torch

        lens = cached_lengths(case)
        b, hkv = case.k.shape[0], case.k.shape[1]
        size = self.page_size(case)
        table, total, blocks = self._pages(case, lens, size)
        fill = torch.nan if self.poison else 0.0
        k_cache = case.k.new_full((total, size, hkv, case.k.shape[-1]), fill)
        v_cache = case.v.new_full((total, size, hkv, case.v.shape[-1]), fill)
        for n in range(b):
            for i, page in enumerate(table[n, : blocks[n]].tolist()):
                keys = slice(i * size, min((i + 1) * size, int(lens[n])))
                count = keys.stop - keys.start  # a page another sequence shares holds the same keys
                k_cache[page, :count] = case.k[n, :, keys].transpose(0, 1)
                v_cache[page, :count] = case.v[n, :, keys].transpose(0, 1)
        if self.cache_layout == "hnd":  # heads before slots, each page's (H_kv, block_size, D) contiguous
            k_cache, v_cache = (c.transpose(1, 2).contiguous() for c in (k_cache, v_cache))
        device = case.q.device
        args = {"q": case.q.transpose(1, 2), "k_cache": k_cache, "v_cache": v_cache}
        if self.table == "csr":  # FlashInfer's: each sequence's pages in a row, and its last page's keys
            pages = torch.tensor(blocks, dtype=torch.int64)
            indptr = torch.cat([pages.new_zeros(1), pages.cumsum(0)])
            indices = torch.cat([table[n, : blocks[n]] for n in range(b)]) if b else table[:0, 0]
            last = torch.where(pages > 0, lens - (pages - 1) * size, 0)
            for name, t in (("kv_indptr", indptr), ("kv_indices", indices), ("kv_last_page_len", last)):
                args[name] = t.to(device=device, dtype=torch.int32)
        else:
            args |= {"block_table": table.to(device), "seqlens_k": lens.to(device=device, dtype=torch.int32)}
        return args, {}

    def _pages(
        self, case: AttentionCase, lens: torch.Tensor, size: int
    ) -> tuple[torch.Tensor, int, list[int]]:
        """The block table ``(B, max_blocks)``, the number of physical pages, and each
        sequence's number of blocks. A sequence's block whose keys, and every key before them,
        are another sequence's (a shared prompt, :attr:`~xattn_ref.cases.CaseSpec.shared_prefix`;
        longer sequences first) is read from that sequence's page, as prefix caching and forked
        sequences share it; the others get pages of their own. Pages are placed at random by
        the case's seed, with two spare pages no sequence uses, where the table's padding
        points."""
        import torch

        b = case.k.shape[0]
        blocks = [-(-int(n) // size) for n in lens]  # ceil
        logical: dict[int, list[int]] = {}  # the pages of each sequence, numbered in order of first use
        pages = 0
        for n in sorted(range(b), key=lambda n: -int(lens[n])):
            logical[n] = []
            for i in range(blocks[n]):
                end = min((i + 1) * size, int(lens[n]))  # n's keys up to the end of this block
                owner = next((m for m in logical if m != n and self._same_keys(case, lens, m, n, end)), None)
                if owner is None:
                    logical[n].append(pages)
                    pages += 1
                else:
                    logical[n].append(logical[owner][i])
        spare = 2  # pages no sequence uses (their slots poisoned)
        seed = 0 if case.spec is None else case.spec.seed
        place = torch.randperm(pages + spare, generator=torch.Generator().manual_seed(seed))
        table = torch.full((b, max(1, *blocks) if blocks else 1), int(place[-1]), dtype=torch.int32)
        for n, row in logical.items():
            if row:
                table[n, : len(row)] = place[row]
        return table, pages + spare, blocks

    @staticmethod
    def _same_keys(case: AttentionCase, lens: torch.Tensor, m: int, n: int, end: int) -> bool:
        """Whether sequence m holds sequence n's first ``end`` keys and values."""
        import torch

        if int(lens[m]) < end:
            return False
        return all(torch.equal(t[m, :, :end], t[n, :, :end]) for t in (case.k, case.v))

    def shared_pages(self, case: AttentionCase) -> int:
        """How many pages of ``case``'s layout more than one sequence reads."""
        import torch

        lens = cached_lengths(case)
        size = self.page_size(case)
        table, _, blocks = self._pages(case, lens, size)
        used = torch.cat([table[n, : blocks[n]] for n in range(len(lens))])
        return int((used.bincount() > 1).sum()) if used.numel() else 0

    def page_size(self, case: AttentionCase) -> int:
        """The keys a page holds for ``case``: ``block_size``, or one of :data:`PAGE_SIZES` by its seed."""
        seed = 0 if case.spec is None else case.spec.seed
        return self.block_size or PAGE_SIZES[seed % len(PAGE_SIZES)]

    def describe(self, case: AttentionCase) -> str:
        poison = "NaN" if self.poison else "zeros"
        shared = self.shared_pages(case)
        sharing = f", {shared} shared between sequences" if shared else ""
        return f"; in pages of {self.page_size(case)} placed at random{sharing}, unused slots {poison}"

    def run(self, case: AttentionCase, args: dict[str, Any], kwargs: dict[str, Any]) -> torch.Tensor:
        from xattn_ref._calls import check_output

        out = self.produce(case, args, kwargs)
        b, h, lq, dv = case.q.shape[0], case.q.shape[1], case.q.shape[2], case.v.shape[-1]
        shape = (b, lq, h, dv)
        out = check_output(out, case.q, lambda t: tuple(t.shape) == shape, f"(B, Lq, H, Dv) = {shape}")
        return out.transpose(1, 2)

    def snippet(self) -> str:
        return (
            "from xattn_ref.kinds import PagedCall\n"
            f"args, _ = PagedCall(lambda *_: fn, block_size={self.block_size}, poison={self.poison}, "
            f"cache_layout={self.cache_layout!r}, table={self.table!r})"
            ".arguments(case)  # q (B, Lq, H, D), the paged cache and its table\n"
            "out = fn(*args.values())  # (B, Lq, H, Dv)"
        )


def cached_lengths(case: AttentionCase) -> torch.Tensor:
    """Each sequence's number of keys: its mask must be a ``cached`` slice (its keys first, its
    queries the last of them, the same for every head); :class:`~xattn_ref.errors.Inexpressible`
    otherwise."""
    import torch

    from xattn_ref.cases import SlicePattern

    b, lq, lk = case.q.shape[0], case.q.shape[2], case.k.shape[2]
    m = case.full_mask.cpu()
    if not bool((m == m[:, :1]).all()):
        raise Inexpressible("a paged kernel takes one mask per sequence, the same for every head")
    m = m[:, 0]
    # the last query sees every key of its sequence
    lens = m[:, -1].sum(-1) if lq else torch.zeros(b, dtype=torch.int64)
    for n in range(b):
        if not torch.equal(m[n], SlicePattern("cached", int(lens[n])).build(lq, lk)):
            raise Inexpressible(
                "a paged kernel needs each sequence's keys first and its queries the last of them (causal)"
            )
    return lens


class PagedKind(Kind):
    name = "paged"
    signature = (
        "fn(q, k_cache, v_cache, block_table, seqlens_k) -> out (B, Lq, H, Dv); q (B, Lq, H, D) the newest "
        "Lq tokens of each sequence, causal at its end; caches (num_blocks, block_size, H_kv, D) in pages"
    )
    properties = (
        "finite_output",
        "empty_rows_zero",
        "reference_agreement",
        "batch_independence",
        "no_input_mutation",
        "dtype_consistency",
        "device_consistency",
    )  # inference kernels: no gradients; the padding is the cache's unused slots, poisoned in every case
    roles = ("q", "k_cache", "v_cache", "block_table", "seqlens_k")
    csr_roles = ("q", "k_cache", "v_cache", "kv_indptr", "kv_indices", "kv_last_page_len")

    def required_roles(self, options: dict[str, Any]) -> tuple[str, ...]:
        return self.csr_roles if options.get("table") == "csr" else self.roles

    options = (
        Option("block_size", "keys a page holds; 0 (default): each case in pages of 16, 1, 3 or 5",
               minimum=0),
        Option("poison", "nan: the cache's slots that hold no key are NaN (a reused cache's garbage); "
               "none: zeros", type="choice", choices=("nan", "none"), default="nan"),
        Option("cache_layout", "nhd: caches (num_blocks, block_size, H_kv, D), flash-attention's and vLLM's; "
               "hnd: (num_blocks, H_kv, block_size, D), FlashInfer's HND", type="choice",
               choices=("nhd", "hnd"), default="nhd"),
        Option("table", "block_table: block_table (B, max_blocks) and seqlens_k (B,), flash-attention's "
               "and vLLM's; csr: kv_indptr (B + 1,), kv_indices (the pages in order), kv_last_page_len "
               "(B,) (1 to block_size keys; 0 for a sequence with none), FlashInfer's", type="choice",
               choices=("block_table", "csr"), default="block_table"),
        Option("queries", "chunk: 1 to 4 queries a sequence (decode and chunked prefill); decode: one",
               type="choice", choices=("chunk", "decode"), default="chunk"),
        *CALL_OPTIONS,
    )  # fmt: skip

    def make_call(self, fn_for: FnFor, options: dict[str, Any], differentiable: bool) -> PagedCall:
        return PagedCall(
            fn_for,
            dialect=Dialect(forward_only=True),
            differentiable=False,
            block_size=int(options.get("block_size") or 0),
            poison=options.get("poison", "nan") == "nan",
            cache_layout=options.get("cache_layout", "nhd"),
            table=options.get("table", "block_table"),
            **self.call_settings(options),
        )

    def describe(self, options: dict[str, Any]) -> str:
        size = options.get("block_size") or 0
        pages = f"pages of {size}" if size else "pages of 16, 1, 3 or 5"
        poison = "NaN" if options.get("poison", "nan") == "nan" else "zeros"
        one = "; one query a sequence" if options.get("queries") == "decode" else ""
        hnd = "; caches (num_blocks, H_kv, block_size, D)" if options.get("cache_layout") == "hnd" else ""
        signature = self.signature
        if options.get("table") == "csr":
            signature = signature.replace("block_table, seqlens_k", "kv_indptr, kv_indices, kv_last_page_len")
        return f"{signature}{hnd}; {pages}, unused slots {poison}{one}; forward-only"

    def cases(self, options: dict[str, Any], dtype: torch.dtype, device: str) -> st.SearchStrategy[Any]:
        from hypothesis import strategies as st

        from xattn_ref.strategies import attention_cases

        return attention_cases(
            dtypes=[dtype],
            devices=[device],
            mask_layouts=["query_key"],
            mask_patterns=["cached"],
            allow_no_mask=False,
            gqa=True,
            q_len=1 if options.get("queries") == "decode" else st.integers(1, 4),
            memory_layouts=["contiguous"],  # the call lays the cache out itself
            shared_prefix=True,
        )

    def probe(self, options: dict[str, Any], dtype: torch.dtype, device: str) -> AttentionCase:
        from xattn_ref.cases import CaseSpec, MaskSpec, SlicePattern

        lq = 1 if options.get("queries") == "decode" else 2
        mask = MaskSpec("query_key", (SlicePattern("cached", 5), SlicePattern("cached", 3)))
        return CaseSpec(
            batch_size=2, num_heads=2, q_len=lq, kv_len=5, head_dim=8, value_dim=8, dtype=dtype,
            device=device, seed=0, logit_std=(1.0, 1.0), value_std=(1.0, 1.0), mask=mask,
        ).build()  # fmt: skip
