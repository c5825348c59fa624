"""The paged kind: attention over a KV cache in pages (flash_attn_with_kvcache's and the serving
engines' calling convention). Its known-bad kernels (whole pages read, a chunk causal from the
top-left, pages read in memory order, pages taken to hold 16 keys, partial results kept by
physical page) are caught in every dtype by tests/test_dialects.py, which runs every registered
known-bad function."""

from __future__ import annotations

import torch
from _support import not_holding, run

from xattn_ref.cases import CaseSpec, MaskSpec, SlicePattern
from xattn_ref.kinds import KINDS, PagedCall
from xattn_ref.plan import select_properties
from xattn_ref.zoo.kernels import (
    paged_csr_kernel,
    paged_hnd_kernel,
    paged_reference_kernel,
    paged_split_kernel,
)
from xattn_ref.zoo.known_bad import paged_hnd_reshaped, paged_partials_by_page, paged_reads_whole_pages


def _case(dtype=torch.float32, seed=0, lens=(7, 1, 0), shared_prefix=0):
    # three sequences: a chunk of 2 at the end of 7 cached keys, 1 key (its first query before the
    # start: no key), none
    mask = MaskSpec("query_key", tuple(SlicePattern("cached", n) for n in lens))
    return CaseSpec(
        batch_size=3, num_heads=4, num_kv_heads=2, q_len=2, kv_len=7, head_dim=8, value_dim=8, dtype=dtype,
        device="cpu", seed=seed, logit_std=(1.0,) * 3, value_std=(1.0,) * 3, mask=mask,
        shared_prefix=shared_prefix,
    ).build()  # fmt: skip


def test_a_case_is_laid_out_in_shuffled_pages_whose_unused_slots_are_nan():
    case = _case(seed=2)  # pages of 3 (PAGE_SIZES[2 % 4])
    args, _ = PagedCall(lambda *_: paged_reference_kernel).arguments(case)
    table, lens = args["block_table"], args["seqlens_k"]
    assert args["k_cache"].shape[1:] == (3, 2, 8) and args["q"].shape == (3, 2, 4, 8)
    assert lens.tolist() == [7, 1, 0] and table.dtype == torch.int32
    pages = table[0, :3].long()  # sequence 0's 7 keys: pages of 3, 3 and 1
    assert torch.equal(args["k_cache"][pages].flatten(0, 1)[:7], case.k[0].transpose(0, 1))
    assert args["k_cache"][pages[2], 1:].isnan().all()  # past its length in its last page
    used = {int(p) for p in table[0, :3]} | {int(table[1, 0])}
    spare = [p for p in range(args["k_cache"].shape[0]) if p not in used]
    assert spare and args["k_cache"][spare].isnan().all()  # pages no sequence uses
    assert int(table[2, 0]) in spare  # the table's padding points at a poisoned page
    poisonless, _ = PagedCall(lambda *_: paged_reference_kernel, poison=False).arguments(case)
    assert not poisonless["k_cache"].isnan().any()
    out = paged_reference_kernel(*args.values()).transpose(1, 2)
    assert torch.equal(out[1, :, 0], torch.zeros(4, 8)) and torch.equal(out[2], torch.zeros(4, 2, 8))


def test_the_correct_paged_kernel_holds_every_property():
    results = [
        run(p, paged_reference_kernel, d, kind="paged", max_examples=15)
        for p in select_properties(KINDS["paged"], None, None)
        for d in (torch.float64, torch.float16)
    ]
    assert not not_holding(results)
    decode = run("reference_agreement", paged_reference_kernel, kind="paged", queries="decode", block_size=16)
    assert decode.status == "passed" and decode.applied


def test_zeros_in_the_unused_slots_hide_the_nan_but_not_the_wrong_keys():
    """--poison none: a kernel that reads whole pages is finite then, and still wrong."""
    assert run("finite_output", paged_reads_whole_pages, kind="paged", poison="none").status == "passed"
    assert run("reference_agreement", paged_reads_whole_pages, kind="paged", poison="none").status == "failed"


def test_sequences_that_share_a_prompt_share_its_pages_and_the_shorter_reads_the_longers():
    case = _case(seed=2, lens=(7, 5, 7), shared_prefix=6)  # pages of 3; keys 0-5 the same
    call = PagedCall(lambda *_: paged_reference_kernel)
    args, _ = call.arguments(case)
    table = args["block_table"]
    assert table[0, :2].tolist() == table[1, :2].tolist() == table[2, :2].tolist()  # keys 0-5
    assert table[0, 2] != table[2, 2]  # key 6 differs: a page each
    assert int(table[1, 1]) == int(table[0, 1])  # sequence 1's 5th key shares a page holding 6
    assert call.shared_pages(case) == 2 and "2 shared between sequences" in call.describe(case)
    torch.testing.assert_close(paged_split_kernel(*args.values()), paged_reference_kernel(*args.values()))
    assert call.shared_pages(_case(seed=2, lens=(7, 5, 7))) == 0  # no shared prompt, no shared page


def test_a_kernel_that_keeps_partials_by_physical_page_is_right_until_pages_are_shared():
    """The defect needs the dimension: without a shared prompt the known-bad holds."""
    call = PagedCall(lambda *_: paged_partials_by_page)
    for shared, right in ((0, True), (6, False)):
        case = _case(seed=2, lens=(7, 5, 7), shared_prefix=shared)
        args, _ = call.arguments(case)
        got, want = paged_partials_by_page(*args.values()), paged_split_kernel(*args.values())
        assert torch.allclose(got, want) is right, shared


def test_the_hnd_cache_layout_puts_each_pages_heads_before_its_slots():
    """--cache-layout hnd (FlashInfer's): the same pages, (num_blocks, H_kv, block_size, D); a
    kernel that reshapes it to NHD is right only with one kv head (or one key a page)."""
    case = _case(seed=2)  # pages of 3, two kv heads
    nhd, _ = PagedCall(lambda *_: paged_reference_kernel).arguments(case)
    hnd, _ = PagedCall(lambda *_: paged_hnd_kernel, cache_layout="hnd").arguments(case)
    assert hnd["k_cache"].is_contiguous() and hnd["k_cache"].shape[1:] == (2, 3, 8)
    assert torch.equal(hnd["k_cache"].transpose(1, 2).nan_to_num(), nhd["k_cache"].nan_to_num())
    assert torch.equal(paged_hnd_kernel(*hnd.values()), paged_reference_kernel(*nhd.values()))
    assert not torch.equal(paged_hnd_reshaped(*hnd.values()).nan_to_num(), paged_hnd_kernel(*hnd.values()))
    one_head = hnd["k_cache"][:, :1], hnd["v_cache"][:, :1]
    args = (hnd["q"][:, :, :1], *one_head, hnd["block_table"], hnd["seqlens_k"])
    assert torch.equal(paged_hnd_reshaped(*args), paged_hnd_kernel(*args))


def test_the_csr_table_names_each_sequences_pages_in_a_row_and_its_last_pages_keys():
    """--table csr (FlashInfer's): kv_indptr, kv_indices, kv_last_page_len for the same pages as
    the block table; a sequence with no keys has no pages and a last page of 0 keys."""
    case = _case(seed=2)  # pages of 3: sequences of 7, 1 and 0 keys
    table, _ = PagedCall(lambda *_: paged_reference_kernel).arguments(case)
    csr, _ = PagedCall(lambda *_: paged_csr_kernel, table="csr").arguments(case)
    assert list(csr) == ["q", "k_cache", "v_cache", "kv_indptr", "kv_indices", "kv_last_page_len"]
    assert csr["kv_indptr"].tolist() == [0, 3, 4, 4] and csr["kv_last_page_len"].tolist() == [1, 1, 0]
    blocks = table["block_table"]
    assert csr["kv_indices"].tolist() == [*blocks[0, :3].tolist(), int(blocks[1, 0])]
    assert all(t.dtype == torch.int32 for name, t in csr.items() if name.startswith("kv_"))
    assert torch.equal(paged_csr_kernel(*csr.values()), paged_reference_kernel(*table.values()))
