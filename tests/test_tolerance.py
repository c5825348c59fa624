"""The tolerance model, tested against measured errors: correct implementations written in
different ways stay within it in every dtype and at every logit scale, wrong values beyond a
few roundings do not, and it is tight (a stated multiple of a plain implementation's error)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _support import tf32_rounded

from xattn_ref._calls import cotangent
from xattn_ref._kernel import plain_attention
from xattn_ref.cases import CaseSpec, MaskSpec, SlicePattern
from xattn_ref.dialects import Dialect
from xattn_ref.guard import safe_sdpa
from xattn_ref.tolerance import TF32_EPS, Budget, format_pair, kernel_budget, matmul_eps
from xattn_ref.zoo.kernels import eager_kernel, flash_backward_kernel, online_softmax_kernel

LOW = [torch.float32, torch.float16, torch.bfloat16]
STDS = [1.0, 10.0, 100.0]
GRADS = ("dq", "dk", "dv")


def make_case(dtype, logit_std=10.0, seed=11, kv_len=40):
    mask = MaskSpec("key_padding", (SlicePattern("right_padding", 30), SlicePattern("all_false")))
    spec = CaseSpec(
        batch_size=2,
        num_heads=2,
        q_len=5,
        kv_len=kv_len,
        head_dim=16,
        value_dim=16,
        dtype=dtype,
        device="cpu",
        seed=seed,
        logit_std=(logit_std, logit_std),
        value_std=(1.0, 1e-3),
        mask=mask,
    )
    return spec.build()


def results(fn, case, g):
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (case.q, case.k, case.v))
    out = fn(q, k, v, case.mask)
    return dict(zip(("out", *GRADS), (out, *torch.autograd.grad(out, (q, k, v), g))))


def sdpa(q, k, v, mask):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).nan_to_num(0.0)


def plain(q, k, v, mask):
    return plain_attention(q, k, v, mask, q.shape[-1] ** -0.5)


@pytest.mark.parametrize("std", STDS)
@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize(
    "fn", [sdpa, plain, online_softmax_kernel, flash_backward_kernel, eager_kernel], ids=lambda f: f.__name__
)
def test_correct_implementations_are_within_the_budget(fn, dtype, std):
    for seed in range(3):
        case = make_case(dtype, std, seed)
        g = cotangent(case, (*case.q.shape[:3], case.v.shape[-1]))
        budget = kernel_budget(case, g, grads=True)
        for name, value in results(fn, case, g).items():
            c = budget.compare(name, value)
            assert c.ok, c.explain()


@pytest.mark.parametrize("dtype", LOW)
def test_wrong_values_a_few_roundings_off_are_caught(dtype):
    """The budget of an output element is some dozens of roundings of it, not a fraction of the
    output: scaling the output by 1 + 100 eps fails, at every logit scale (the tightest element
    allows 32 eps in half precision, 76 eps in float32 at logit std 1, where the D = 16 products
    of each logit are accumulated in float32 too)."""
    for std in STDS:
        case = make_case(dtype, std)
        g = cotangent(case, (*case.q.shape[:3], case.v.shape[-1]))
        budget = kernel_budget(case, g, grads=False)
        wrong = budget.truth["out"] * (1 + 100 * torch.finfo(dtype).eps)
        assert not budget.compare("out", wrong).ok, std


def test_float64_gradients_in_the_subnormals_are_within_the_budget():
    """dk of about -3.04e-318 (615,000 subnormal spacings eta): SDPA is off by 15 eta. The truth
    multiplies by the scale last (scaling the subnormal dS first rounds it at eta, and |q| = 268
    then multiplies that: the truth itself was off by 85 eta against 84 allowed, the sweep's one
    float64 false failure), and the budget counts a dS rounded before |q| multiplies it."""
    mask = MaskSpec("query_key", (SlicePattern("all_false"),) * 2 + (SlicePattern("random", 3, 48, 0),))
    case = CaseSpec(
        batch_size=3,
        num_heads=4,
        q_len=3,
        kv_len=65,
        head_dim=64,
        value_dim=8,
        dtype=torch.float64,
        device="cpu",
        seed=48035,
        logit_std=(1.0, 1.0, 100.0),
        value_std=(1.0, 1.0, 1e-3),
        mask=mask,
        head_scale=(1.0, 10.0, 1.0, 1.0),
    ).build()
    g = cotangent(case, (3, 4, 3, 8))
    budget = kernel_budget(case, g, grads=True)
    got = results(sdpa, case, g)
    assert 0 < abs(budget.truth["dk"][2, 1, 12, 62].item()) < 1e-317
    for name in GRADS:
        assert budget.compare(name, got[name]).ok, budget.compare(name, got[name]).explain()


def test_an_online_softmax_through_an_underflowed_rescale_is_within_the_budget():
    """float32 dk of 2.4e-42 (1,700 subnormal spacings): the online softmax differentiates through
    its running maximum, and its rescale factor exp(-92.9) underflowed, so the two cancelling
    paths at key 8 (a running maximum) leave it off by 8e-41; the budget counts the
    accumulator's subnormal spacing there (the sweep's one float32 false failure before)."""
    pad = (SlicePattern("all_true"), SlicePattern("all_false"), SlicePattern("all_false"))
    case = CaseSpec(
        batch_size=3,
        num_heads=2,
        q_len=1,
        kv_len=127,
        head_dim=16,
        value_dim=16,
        dtype=torch.float32,
        device="cpu",
        seed=227,
        logit_std=(10.0, 1.0, 1.0),
        value_std=(1e3, 1.0, 1.0),
        mask=MaskSpec("key_padding", pad),
        logit_shift=(-30.0, 0.0, 0.0),
        value_mean=(8.0, 0.0, 0.0),
        head_scale=(1.0, 10.0),
    ).build()
    g = cotangent(case, (3, 2, 1, 16))
    budget = kernel_budget(case, g, grads=True)
    got = results(online_softmax_kernel, case, g)
    assert abs(got["dk"][0, 1, 8, 0] - budget.truth["dk"][0, 1, 8, 0]) > 1e-41
    for name in GRADS:
        assert budget.compare(name, got[name]).ok, budget.compare(name, got[name]).explain()


def test_bfloat16_scores_off_by_whole_units_are_within_the_budget():
    """Eager attention (the scores rounded to bfloat16, as Hugging Face's eager attention rounds
    them) at logit std 100, and 1000 with a head scaled by 10: a score of 1000 is off by up to 4,
    enough to change which key a row attends to. The budget bounds the weights' errors exactly
    (``expm1`` of the logits' error, at most the farthest value): the first-order model it
    replaced failed both cases (out off by 0.0451 against 0.044 allowed; dk off by 3.5e-5
    against 1.3e-7)."""
    one = CaseSpec(
        batch_size=1,
        num_heads=1,
        q_len=3,
        kv_len=102,
        head_dim=8,
        value_dim=8,
        dtype=torch.bfloat16,
        device="cpu",
        seed=0,
        logit_std=(100.0,),
        value_std=(1.0,),
        mask=None,
    ).build()
    pad = MaskSpec("key_padding", (SlicePattern("all_false"), SlicePattern("all_true")))
    two = CaseSpec(
        batch_size=2,
        num_heads=1,
        q_len=3,
        kv_len=224,
        head_dim=8,
        value_dim=8,
        dtype=torch.bfloat16,
        device="cpu",
        seed=84941854,
        logit_std=(100.0, 100.0),
        value_std=(1.0, 1.0),
        mask=pad,
        head_scale=(10.0,),
    ).build()
    for case in (one, two):
        g = cotangent(case, (case.batch_size, 1, 3, 8))
        budget = kernel_budget(case, g, grads=True)
        for name, t in results(eager_kernel, case, g).items():
            assert budget.compare(name, t).ok, budget.compare(name, t).explain()


def test_a_backward_that_rounds_dv_once_per_block_of_32_queries_is_within_the_budget():
    """torch's CPU flash-attention backward adds each block of 32 queries into dv in the input
    dtype: over 65 queries of one key, bfloat16 dv = 0.1875 where the truth is 0.1926. The
    budget counts a rounding per block of 32 (0.00271 was allowed without it: the sweep's false
    failure once the recomputed logsumexp counted at float32's eps, not bfloat16's)."""
    mask = MaskSpec("key_padding", (SlicePattern("all_true"),))
    case = CaseSpec(
        batch_size=1,
        num_heads=2,
        q_len=65,
        kv_len=1,
        head_dim=1,
        value_dim=1,
        dtype=torch.bfloat16,
        device="cpu",
        seed=1399,
        logit_std=(1.0,),
        value_std=(1.0,),
        mask=mask,
    ).build()
    sentinel = Dialect(mask="sentinel").arguments(case)[0]["mask"]
    g = cotangent(case, (1, 2, 65, 1))
    got = results(lambda q, k, v, _: safe_sdpa(q, k, v, attn_mask=sentinel), case, g)
    budget = kernel_budget(case, g, grads=True)
    assert abs(got["dv"][0, 1, 0, 0].item() - budget.truth["dv"][0, 1, 0, 0].item()) > 0.005
    for name, t in got.items():
        assert budget.compare(name, t).ok, budget.compare(name, t).explain()


def test_an_infinity_from_a_partial_sum_past_the_range_is_within_the_budget_only_there():
    """torch's CPU flash-attention backward adds blocks of 32 queries into a float16 dk: over 127
    queries with values of spread 1000, a partial sum passes 65504 though the whole does not, and
    dk[1, 1, 1, 0] is inf where the truth is finite (the main job's one false failure once the
    logsumexp counted at float32's eps). An infinity is admitted where the sizes of the terms
    sum past the range (a partial sum may), and nowhere else."""
    pads = tuple(SlicePattern(n) for n in ("all_false",) * 3 + ("all_true",) + ("all_false",) * 2)
    case = CaseSpec(
        batch_size=3,
        num_heads=2,
        q_len=127,
        kv_len=4,
        head_dim=8,
        value_dim=8,
        dtype=torch.float16,
        device="cpu",
        seed=904641753,
        logit_std=(1.0, 0.01, 1.0),
        value_std=(1.0, 1000.0, 1.0),
        mask=MaskSpec("full", pads),
        logit_shift=(0.0, -30.0, 0.0),
    ).build()
    g = cotangent(case, (3, 2, 127, 8))
    got = results(sdpa, case, g)["dk"]
    budget = kernel_budget(case, g, grads=True)
    top = torch.finfo(torch.float16).max
    assert got[1, 1, 1, 0].isinf() and abs(budget.truth["dk"][1, 1, 1, 0]) < top
    assert budget.reach["dk"][1, 1, 1, 0] >= top
    assert budget.compare("dk", got).ok, budget.compare("dk", got).explain()
    small = (budget.reach["dk"] < 1.0).nonzero()[0].tolist()
    wrong = got.clone()
    wrong[tuple(small)] = torch.inf
    assert not budget.compare("dk", wrong).ok


def test_a_nan_from_partial_sums_past_the_range_is_within_the_budget_only_there():
    """Hugging Face's GQA path repeats k and v per head and autograd sums the heads' dk in
    float16: three true dk of +74,237, +68,028 and -73,305 round to infinities and add up to NaN
    (the false-failure sweep's one non-finite result, and 1 main-job seed in 20). Where the sizes
    of the terms sum past the range, NaN says what an infinity of either sign says; anywhere
    else it is a failure."""
    case = CaseSpec(
        batch_size=2,
        num_heads=6,
        q_len=2,
        kv_len=63,
        head_dim=1,
        value_dim=16,
        dtype=torch.float16,
        device="cpu",
        seed=291,
        logit_std=(1.0, 0.01),
        value_std=(1.0, 1000.0),
        mask=None,
        logit_shift=(0.0, -30.0),
        head_scale=(1.0,) * 4 + (10.0,) * 2,
        num_kv_heads=1,
        scale=1.0,
    ).build()

    def repeated(q, k, v, mask):
        k, v = k.repeat_interleave(6, 1), v.repeat_interleave(6, 1)
        return F.scaled_dot_product_attention(q, k, v, scale=1.0)

    g = cotangent(case, (2, 6, 2, 16))
    got = results(repeated, case, g)["dk"]
    budget = kernel_budget(case, g, grads=True)
    top = torch.finfo(torch.float16).max
    nan = got.isnan()
    assert nan.any() and bool((budget.reach["dk"][nan] >= top).all())
    assert budget.compare("dk", got).ok, budget.compare("dk", got).explain()
    small = (budget.reach["dk"] < 1.0).nonzero()[0].tolist()
    wrong = got.clone()
    wrong[tuple(small)] = torch.nan
    assert not budget.compare("dk", wrong).ok


def test_flushing_float32_subnormals_to_zero_is_within_cuda_budgets_only():
    """On an H200, SDPA's efficient backend gave float32 dk = 0 where the truth is -2.25e-41 (a
    row whose logits are shifted by -1000): it flushes subnormals to zero. CUDA budgets count a
    value near zero as off by up to the smallest normal float32; CPU budgets by the subnormal
    spacing, which a flushed gradient exceeds."""
    mask = MaskSpec("shared", (SlicePattern("all_true"),))
    case = CaseSpec(
        batch_size=2,
        num_heads=1,
        q_len=1,
        kv_len=31,
        head_dim=8,
        value_dim=8,
        dtype=torch.float32,
        device="cpu",
        seed=0,
        logit_std=(1.0, 1.0),
        value_std=(1.0, 1.0),
        mask=mask,
        logit_shift=(-1000.0, 0.0),
    ).build()
    g = cotangent(case, (2, 1, 1, 8))
    tiny = torch.finfo(torch.float32).smallest_normal
    flushed = {n: torch.where(t.abs() < tiny, 0.0, t) for n, t in results(sdpa, case, g).items()}
    cpu, cuda = (kernel_budget(case, g, grads=True, flush_to_zero=f) for f in (False, True))
    assert 0 < abs(cpu.truth["dk"][0, 0, 4, 0].item()) < tiny and flushed["dk"][0, 0, 4, 0] == 0
    assert not cpu.compare("dk", flushed["dk"]).ok
    for name, t in flushed.items():
        assert cuda.compare(name, t).ok, cuda.compare(name, t).explain()


def test_a_zero_scale_gives_a_finite_budget_that_still_catches_a_wrong_value():
    """scale=0: uniform weights. The floor's terms for a scale folded into dS vanish with it (they
    divide by the scale), so the budget stays finite and a wrong output fails."""
    spec = CaseSpec(
        batch_size=1,
        num_heads=1,
        q_len=3,
        kv_len=5,
        head_dim=8,
        value_dim=8,
        dtype=torch.float32,
        device="cpu",
        seed=3,
        logit_std=(1.0,),
        value_std=(1.0,),
        mask=None,
        scale=0.0,
    )
    case = spec.build()
    g = cotangent(case, (1, 1, 3, 8))
    budget = kernel_budget(case, g, grads=True)
    assert all(budget.allowed(n).isfinite().all() for n in ("out", *GRADS))
    truth = budget.truth["out"]
    assert budget.compare("out", truth.float()).ok and not budget.compare("out", truth.float() * 1.01).ok


def test_an_infinity_is_within_the_budget_only_where_the_allowance_reaches_the_range():
    """Where ``truth + allowed`` reaches past float16's largest value a correct result may round to
    +inf (and to -inf below): an infinity there is within the budget, of either sign only when the
    allowance spans both ends; elsewhere an infinity fails."""
    truth = torch.tensor([[60000.0, 60000.0, -60000.0, 100.0, 0.0]], dtype=torch.float64)
    floor = torch.tensor([[1e4, 1e4, 1e4, 1e4, 2e5]], dtype=torch.float64)
    budget = Budget({"y": truth}, {"y": torch.zeros_like(truth)}, {"y": floor}, {"y": 2.0}, torch.float16)
    inf = torch.inf
    actual = torch.tensor([[inf, -inf, -inf, inf, -inf]], dtype=torch.float16)
    assert budget.compare("y", actual).error.isinf().tolist() == [[False, True, False, True, False]]


def test_a_plain_implementation_that_overflows_does_not_make_the_budget_infinite():
    """The plain float16 dk overflows here (its partial sums pass 65504): its error is not a
    measure of anything, and the budget stands on the floor alone (it was infinite for the row)."""
    mask = MaskSpec("key_padding", (SlicePattern("all_true"),))
    case = CaseSpec(
        batch_size=1,
        num_heads=1,
        q_len=40,
        kv_len=2,
        head_dim=64,
        value_dim=64,
        dtype=torch.float16,
        device="cpu",
        seed=0,
        logit_std=(0.01,),
        value_std=(1e3,),
        mask=mask,
        logit_shift=(-30.0,),
        head_scale=(10.0,),
    ).build()
    g = cotangent(case, (1, 1, 40, 64))
    plain_dk = results(plain, case, g)["dk"]
    assert not plain_dk.isfinite().all()
    budget = kernel_budget(case, g, grads=True)
    assert budget.allowed("dk").isfinite().all()
    assert budget.plain_error["dk"].max() < 65504


def test_a_small_batch_element_cannot_hide_behind_a_large_one():
    mask = MaskSpec("key_padding", (SlicePattern("all_true"), SlicePattern("all_true")))
    case = CaseSpec(
        batch_size=2,
        num_heads=1,
        q_len=3,
        kv_len=5,
        head_dim=8,
        value_dim=8,
        dtype=torch.float32,
        device="cpu",
        seed=5,
        logit_std=(1.0, 1.0),
        value_std=(1e3, 1e-3),
        mask=mask,
    ).build()
    budget = kernel_budget(case, cotangent(case, (2, 1, 3, 8)), grads=False)
    wrong = budget.truth["out"].clone()
    wrong[1, 0, 0, 0] += 1e-3 * wrong[1].abs().max()  # far below batch element 0's values
    c = budget.compare("out", wrong)
    assert not c.ok and "batch element 1" in c.explain()


@pytest.mark.parametrize("dtype", LOW)
def test_the_floor_says_what_it_is_made_of(dtype):
    """Budget.parts splits each floor into its terms (scripts/tightness.py --parts prints them):
    they add up to the floor, and where a row has one allowed key, normalization cancels every
    logit's error, so the output's floor there has no ``logits`` term while other rows do."""
    mask = MaskSpec("key_padding", (SlicePattern("right_padding", 1), SlicePattern("right_padding", 40)))
    case = CaseSpec(
        batch_size=2,
        num_heads=2,
        q_len=5,
        kv_len=40,
        head_dim=16,
        value_dim=16,
        dtype=dtype,
        device="cpu",
        seed=3,
        logit_std=(1.0, 1.0),
        value_std=(1.0, 1e-3),
        mask=mask,
    ).build()
    g = cotangent(case, (*case.q.shape[:3], case.v.shape[-1]))
    budget = kernel_budget(case, g, grads=True)
    assert set(budget.parts) == {"out", *GRADS}
    for name, terms in budget.parts.items():
        torch.testing.assert_close(sum(terms.values()), budget.floor[name], rtol=1e-12, atol=0)
    logits = budget.parts["out"]["logits"]
    assert bool((logits[0] == 0).all()) and bool((logits[1] > 0).all())


@pytest.mark.parametrize("dtype", LOW)
def test_the_budget_is_a_stated_multiple_of_a_plain_implementations_error(dtype):
    """Median over rows where the plain result is not exact (off by more than a thousandth of a
    rounding): allowed / plain error <= 300 for the output. The floor is a worst-case sum over
    keys, a plain kernel's errors mostly cancel: 54 in float32, about 185 in float16 and
    bfloat16 here (docs/tolerance.md gives the figures over default cases)."""
    ratios = []
    for seed in range(4):
        case = make_case(dtype, 1.0, seed)
        g = cotangent(case, (*case.q.shape[:3], case.v.shape[-1]))
        budget = kernel_budget(case, g, grads=False)
        err = (results(plain, case, g)["out"].detach().double() - budget.truth["out"]).abs().amax(-1)
        size = budget.truth["out"].abs().amax(-1)
        rows = err > 1e-3 * torch.finfo(dtype).eps * size
        ratios.append(budget.allowed("out").expand_as(budget.truth["out"]).amax(-1)[rows] / err[rows])
    assert float(torch.cat(ratios).median()) <= 300


def test_nan_is_never_within_budget():
    case = make_case(torch.float32)
    budget = kernel_budget(case, cotangent(case, (2, 2, 5, 16)), grads=False)
    wrong = budget.truth["out"].clone()
    wrong[0, 0, 0, 0] = float("nan")
    assert not budget.compare("out", wrong).ok


def tf32_kernel(q, k, v, mask):
    s = tf32_rounded(q) @ tf32_rounded(k).transpose(-2, -1) * q.shape[-1] ** -0.5
    empty = ~mask.any(-1, keepdim=True)
    p = s.masked_fill(~(mask | empty), float("-inf")).softmax(-1).masked_fill(empty, 0.0)
    return tf32_rounded(p) @ tf32_rounded(v)


def test_tf32_budgets_admit_a_tf32_kernel_and_float32_budgets_do_not():
    case = make_case(torch.float32, 1.0)
    g = cotangent(case, (2, 2, 5, 16))
    out = tf32_kernel(case.q, case.k, case.v, case.mask)
    assert kernel_budget(case, g, grads=False, tf32=True).compare("out", out).ok
    assert not kernel_budget(case, g, grads=False, tf32=False).compare("out", out).ok


def test_tf32_is_used_only_for_float32_on_cuda_below_highest_precision():
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")
        assert matmul_eps(torch.float32, "cuda") == (TF32_EPS, matmul_eps(torch.float32, "cuda")[1])
        assert matmul_eps(torch.float32, "cpu")[0] == torch.finfo(torch.float32).eps
        assert matmul_eps(torch.float16, "cuda")[0] == torch.finfo(torch.float16).eps
        torch.set_float32_matmul_precision("highest")
        assert matmul_eps(torch.float32, "cuda")[0] == torch.finfo(torch.float32).eps
    finally:
        torch.set_float32_matmul_precision(before)


@pytest.mark.parametrize(
    ("a", "b", "shown"),
    [
        (0.685649, 0.68564900279, ("0.685649", "0.68564900279")),
        (1.0, 2.0, ("1", "2")),
        (1.0, 1.0, ("1", "1")),
    ],
)
def test_values_show_enough_digits_to_see_the_difference(a, b, shown):
    assert format_pair(a, b) == shown
