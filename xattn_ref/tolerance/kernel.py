"""The kernel bound: a per-row floor from the float64 truth, term by term (:func:`kernel_budget`).
Derived in :mod:`xattn_ref.tolerance`."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import torch

from xattn_ref._calls import vjp
from xattn_ref._kernel import expand_kv, plain_attention
from xattn_ref.errors import NotTaken
from xattn_ref.tolerance.budget import (
    SMALLEST_TILE,
    Budget,
    _error,
    _finite_or_zero,
    _rounding_unit,
    underflow_unit,
)

if TYPE_CHECKING:
    from xattn_ref.cases import AttentionCase


__all__ = [
    "kernel_budget",
]


def _saturated(p: torch.Tensor, r: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """How far the weights ``P = softmax(z)`` of each row move when every logit ``z_ij`` moves by
    up to ``r_ij``, exactly (not to first order, which fails once ``r`` nears 1: a bfloat16
    logit of 1000 is off by up to 4, enough to swap a row's largest weight):

    - ``moved_ij = P_ij expm1(r_ij) / sum_k P_ik exp(-r_ik)``: with ``sum_j`` over
      ``|x_j - <x>_P|`` it bounds how far any average ``sum_j P_ij x_j`` moves (first order:
      ``P_ij r_ij``);
    - ``w_ij``: how far the weight ``P_ij`` itself moves, the larger of
      ``P e^r / (P e^r + A - P e^-r) - P`` and ``P - P e^-r / (P e^-r + B - P e^r)``,
      ``A = sum_k P_ik e^-r_ik``, ``B = sum_k P_ik e^r_ik`` (first order: ``P_ij ((1 - P_ij)
      r_ij + sum_{k != j} P_ik r_ik)``, which vanishes when one key takes all the weight).
    """
    r = torch.where(m, r, 0.0).clamp(max=300.0)  # e^300 is finite in float64; w <= 1 long before
    up, down = torch.exp(r), torch.exp(-r)
    lo = (p * down).sum(-1, keepdim=True)
    hi = (p * up).sum(-1, keepdim=True)
    moved = p * torch.expm1(r) / torch.where(lo > 0, lo, 1.0)
    pu, pd = p * up, p * down
    upper = pu / torch.where(pu + lo - pd > 0, pu + lo - pd, 1.0) - p
    lower = p - pd / torch.where(pd + hi - pu > 0, pd + hi - pu, 1.0)
    return moved * m, torch.maximum(upper, lower).clamp(min=0.0) * m


def _against_gaps(
    weights: tuple[torch.Tensor, ...], v: torch.Tensor, out: torch.Tensor, m: torch.Tensor
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``sum_j w_ij |v_j - out_i|`` (B, H, Lq, Dv) for each ``w`` of ``weights`` (B, H, Lq, Lk),
    and ``max_j |v_j - out_i|`` over the allowed keys. The differences ``|v_j - out_i|`` are
    (B, H, Lq, Lk, Dv), hundreds of MB for long rows: they are made a block of query rows at a
    time (about 2 MB), which stays in the cache while it is read four times."""
    rows = max(1, (1 << 18) // max(1, v.shape[0] * v.shape[1] * v.shape[2] * v.shape[3]))
    sums: list[list[torch.Tensor]] = [[] for _ in weights]
    farthest = []
    for i in range(0, out.shape[-2], rows):
        block = slice(i, i + rows)
        gap = (v.unsqueeze(-3) - out[..., block, :].unsqueeze(-2)).abs_()  # |v_j - out_i|
        for total, w in zip(sums, weights):
            total.append(torch.einsum("bhij,bhije->bhie", w[..., block, :], gap))
        farthest.append(torch.where(m[..., block, :].unsqueeze(-1), gap, 0.0).amax(-2))
    return [torch.cat(t, -2) for t in sums], torch.cat(farthest, -2)


def _column(t: torch.Tensor, sinks: torch.Tensor | None) -> torch.Tensor:
    """``t`` (B, H, Lq, Lk) with one more key column: the sinks (one per head), or zeros."""
    shape = (*t.shape[:-1], 1)
    extra = t.new_zeros(shape) if sinks is None else sinks.view(1, -1, 1, 1).expand(shape)
    return torch.cat([t, extra.to(t.dtype)], -1)


def _terms(n: torch.Tensor) -> torch.Tensor:
    # A sum of n terms, in any order (a plain loop included), rounds each term at most n times.
    return n.to(torch.float64)


def kernel_budget(
    case: AttentionCase,
    g: torch.Tensor,
    *,
    grads: bool,
    tf32: bool | None = None,
    flush_to_zero: bool | None = None,
    unit: float | None = None,
) -> Budget:
    """The budget of a kernel case (:class:`~xattn_ref.cases.AttentionCase`) for the cotangent
    ``g``: the truth and the first-order floor from the float64 computation on the exactly upcast
    inputs (see the module docstring), the plain error from the same guarded attention run in
    the case's dtype. ``tf32``: whether float32 matmuls round to TF32 (default: as this device
    and torch's settings say). ``flush_to_zero``: whether float32 subnormals may be flushed to
    zero (:func:`underflow_unit`; default: on CUDA). ``unit``: the rounding unit a float64 case
    is judged at where the kernel's float64 run is float32-accurate
    (:func:`xattn_ref.precision.float64_precision`): float32's, for every stage."""
    f64, cpu = torch.float64, "cpu"
    scale = case.effective_scale
    heads, groups = case.q.shape[1], case.groups
    q = case.q.detach().to(device=cpu, dtype=f64)
    # grouped-query: the model runs on k and v repeated to every query head; dk and dv are the
    # sums over each group (and so are their floors)
    k, v = (expand_kv(t.detach().to(device=cpu, dtype=f64), heads) for t in (case.k, case.v))
    bias = None if case.bias is None else case.bias.detach().to(device=cpu, dtype=f64)
    m = case.full_mask.to(cpu)
    cap = case.softcap
    # sinks (gpt-oss): one more key per row, always allowed, whose logit is the head's sink and
    # whose value (and key) is zero; its rows of dk and dv are dropped at the end
    sinks = None if case.sinks is None else case.sinks.detach().to(device=cpu, dtype=f64)
    lk = k.shape[-2]
    if sinks is not None:
        k, v = (torch.cat([t, t.new_zeros(*t.shape[:-2], 1, t.shape[-1])], -2) for t in (k, v))
    eps = max(_rounding_unit(case, tf32), unit or 0.0)
    lowered = case.dtype == f64 and eps > torch.finfo(f64).eps  # judged as a float32 computation
    # Sums of many terms (P v, g v^T, delta, dS k, ...) are accumulated in float32, also for half
    # inputs (flash-attention's rule; a half-precision accumulator is a defect:
    # known_bad.half_accumulator, half_softmax): n terms are off by eps_acc n sum|terms|
    eps_acc = torch.finfo(torch.float32).eps if case.dtype in (torch.float16, torch.bfloat16) else eps

    s = scale * q @ k[..., :lk, :].transpose(-2, -1)
    # soft-capping: z = cap tanh(s / cap), whose slope 1 - t^2 <= 1 passes every error of s on
    # damped, and which adds its own roundings (s / cap, tanh's ulp, cap t: 4u |z| <= 2 eps a)
    t_cap = None
    if cap:
        t_cap = torch.tanh(s / cap)
        s = cap * t_cap
    s_plain = s  # the (capped) logits before the bias
    s = s if bias is None else s + bias
    z_round = torch.zeros_like(s) if bias is None else s.abs()  # S + bias rounds at |z|
    a0 = abs(scale) * q.abs() @ k[..., :lk, :].abs().transpose(-2, -1)  # |s| sum_d |q_id||k_jd|
    a = a0 if bias is None else a0 + bias.abs()  # s + bias rounds relative to |s| + |bias|
    if sinks is not None:  # the sink's column: its logit, exact (nothing rounds it but z - m)
        s, s_plain = _column(s, sinks), _column(s_plain, sinks)
        z_round, a0, a = (_column(t, None) for t in (z_round, a0, a))  # exact: nothing rounds it
        m = torch.cat([m.expand(*s.shape[:-1], lk), m.new_ones(*s.shape[:-1], 1)], -1)
    largest = float(torch.where(m, s.abs(), 0.0).max()) if s.numel() else 0.0
    if lowered and largest * eps > 1.0:
        # the kernel's float64 run computes in float32, where such logits round by more than 1:
        # nothing is left to judge (as for half precision past HALF_SHIFT_CAP)
        raise NotTaken(
            f"its float64 run computes in float32, where logits of size {largest:.3g} keep no digits "
            f"(beyond 1 / eps = {1 / eps:.3g})"
        )
    shift = torch.where(m, s, -torch.inf).amax(-1, keepdim=True).nan_to_num(0.0, neginf=0.0)
    e = torch.exp(torch.where(m, s - shift, 0.0)) * m
    total = e.sum(-1, keepdim=True)
    p = e / torch.where(total > 0, total, 1.0)
    out = p @ v
    # r: bound on the relative error of each unnormalized weight (q·scale and s rounded, then exp);
    # pi: bound on the error of each normalized weight, P_ij (r_ij - sum_k P_ik r_ik) to first
    # order, which vanishes when one key takes all the weight
    # eta: the absolute error of a weight that underflows into T's subnormals
    ftz = case.device.type == "cuda" if flush_to_zero is None else flush_to_zero
    eta = underflow_unit(torch.float32 if lowered else case.dtype, flush_to_zero=ftz)
    # roundings of S: q and k scaled (q·s, or both by sqrt(s)), S itself, S + bias; the
    # accumulation of its D products in any order, in float32 for every input below float64
    # (eps_dot D a: with one dominant product every later addition rounds at its size, so
    # float32 inputs with large logits are off by several eps a); then exp's own rounding
    roundings = (4 if bias is not None else 3) + (2 if cap else 0)
    eps_dot = eps if case.dtype == f64 else torch.finfo(torch.float32).eps
    r = (eps * (roundings * a + 1) + eps_dot * q.shape[-1] * a) * m
    pr, pi = _saturated(p, r, m)
    mf = m.to(f64)  # a weight that underflows is off by eta: those terms are counted in units of
    # eta and multiplied by it last (eta times a scale would itself round away in float64)
    rows = _terms(m.sum(-1, keepdim=True))  # (B, H, Lq, 1)
    cols = _terms(m.sum(-2).unsqueeze(-1))  # (B, H, Lk, 1)
    truth = {"out": out}
    # d out_i = sum_j P_ij r_ij (v_j - out_i): the weights' errors, then the sum and its rounding
    # The output counts each rounding at the unit roundoff u = eps / 2 (round to nearest) and
    # |S_ij| or |z_ij - m_i| where a single rounding of that value is meant (2.-3. of the
    # docstring): q and k scaled (u a0 each), S rounded (u |S|), S + bias (u |z|), z - m
    # (u |z - m|), the D products accumulated (u_dot D a0), exp (one ulp: 2u), all of which
    # normalization cancels in part; then the division and the weight's storage in T (2u each
    # weight, not cancelled), the output's rounding (u |out|) and the sum (u_acc n sum P |v|)
    u, u_dot, u_acc = eps / 2, eps_dot / 2, eps_acc / 2
    capping = 4 * u * a0 if cap else 0.0
    r_out = (u * (2 * a0 + s_plain.abs() + z_round + (s - shift).abs() + 2) + u_dot * q.shape[-1] * a0) * m
    r_out = r_out + capping * m
    # the weights' errors saturate: |out' - out| <= sum_j P_ij expm1(r_ij) |v_j - out_i| /
    # sum_k P_ik exp(-r_ik) (first order: sum_j P_ij r_ij |v_j - out_i|), and never beyond the
    # farthest allowed value (out' is a convex combination of them)
    weighted = (_saturated(p, r_out, m)[0], p * 2 * u, mf)
    (moved, by_weights, spread_eta), farthest = _against_gaps(weighted, v, out, m)
    spread_eta = spread_eta + rows + 2
    # the floor, term by term (Budget.parts): the weights' errors from rounded logits; the
    # division and the weights' storage (2u each weight: against v_j - out_i, and the part common
    # to the row, 2u |out_i|); the output's own rounding; the sums: P v (u_acc n sum_j P_ij |v_j|)
    # and the softmax's row sum, whose error scales every weight of the row alike and so the
    # output (u_acc n |out_i|); and near the subnormals
    parts = {
        "out": {
            "logits": torch.minimum(moved, farthest),
            "weights": by_weights + 2 * u * out.abs(),
            "rounding": u * out.abs(),
            "sums": u_acc * rows * (p @ v.abs() + out.abs()),
            "underflow": eta * spread_eta,
        }
    }
    rule = {"out": 2.0}
    reach: dict[str, torch.Tensor] = {}
    if grads:
        g64 = g.detach().to(device=cpu, dtype=f64)
        dp = g64 @ v.transpose(-2, -1)
        c = g64.abs() @ v.abs().transpose(-2, -1)  # |terms| of dP = g·v
        delta = (g64 * out).sum(-1, keepdim=True)
        ds_z = p * (dp - delta)  # with respect to the logits z
        # soft-capping: dS = dZ (1 - t^2), the slope of cap tanh(s / cap) (1 at the sinks' column,
        # whose key is zero)
        slope = torch.ones_like(ds_z)
        if t_cap is not None:
            slope[..., :lk] = 1 - t_cap.square()
        ds = ds_z * slope
        # the scale last: a subnormal dS scaled first would round at eta and then be multiplied by |k|
        truth.update(dq=scale * (ds @ k), dk=scale * (ds.transpose(-2, -1) @ q), dv=p.transpose(-2, -1) @ g64)
        # Backward passes recompute the weights as exp(s - lse) from a stored logsumexp, whose
        # error does not cancel: its own rounding (eps_acc |lse|, |lse| <= max_j a_ij + log n),
        # that of the largest logit it was shifted by (eps_acc max_j a_ij), and the accumulation
        # order of S, which a backward that recomputes S may not share with the forward that
        # made the lse (2 eps_dot D max_j a_ij: off by that much even where one key takes all
        # the weight)
        # (a sink is a logit of the row too: the logsumexp reaches its size)
        row = a if sinks is None else _column(a[..., :lk], sinks.abs())
        a_max = torch.where(m, row, 0.0).amax(-1, keepdim=True)
        lse = a_max + torch.log(m.sum(-1, keepdim=True) + 1.0)
        pg = p * (eps_acc * (2 * lse + 2) + 2 * eps_dot * q.shape[-1] * a_max)
        # the row sum of n weights (any order) scales every weight of the row alike
        pg = pg + p * eps_acc * rows
        pi = pi + pg
        # dP_ij = g_i·v_j sums Dv terms; delta = sum_j P_ij dP_ij sums n of them (or Dv, as
        # g_i·out_i): the weights' errors (against dP - delta), dP's, and both accumulations
        dv_terms = float(v.shape[-1])
        dp_err = (eps + eps_acc * dv_terms) * c
        # (the weights' part never beyond the farthest allowed dP: delta averages them)
        spread_dp = (dp - delta).abs()
        by_weights = torch.minimum(
            (pr * spread_dp).sum(-1, keepdim=True),
            torch.where(m, spread_dp, 0.0).amax(-1, keepdim=True),
        )
        d_delta = by_weights + (pg * spread_dp).sum(-1, keepdim=True) + (p * dp_err).sum(-1, keepdim=True)
        d_delta = d_delta + eps_acc * rows * (p * dp.abs()).sum(-1, keepdim=True)
        d_delta = d_delta + (eps + eps_acc * dv_terms) * (g64.abs() * out.abs()).sum(-1, keepdim=True)
        # a backward that takes delta as g_i·out_i from the forward's output (flash-attention's)
        # also carries that output's sum of n terms: u_acc n sum_e |g_ie| sum_j P_ij |v_je|
        d_delta = d_delta + u_acc * rows * (p * c).sum(-1, keepdim=True)
        ads, ads_z, sc = ds.abs(), ds_z.abs(), abs(scale)
        # |error of dS_ij|, with the two roundings of dS = P (dP - delta) itself (the difference
        # and the product, each stored in T by a plain backward)
        # a kernel that differentiates through its shift m_i = max_j z_ij (not detached) adds
        # -sum_j dS_ij, zero in exact arithmetic, to dS at the row's largest logit: its
        # accumulation error, eps_acc n sum_j |dS_ij|
        top = m & (s == shift)
        # term by term (Budget.parts): the weights', dP's and delta's errors, and dS's own
        f = {
            "weights": pi * (dp - delta).abs(),
            "dP": p * dp_err,
            "delta": p * d_delta,
            "dS": 2 * eps * ads_z + top * eps_acc * rows * ads_z.sum(-1, keepdim=True),
        }
        if t_cap is not None and cap:
            # through the cap: dZ's errors times the slope, and the slope's own error times |dZ|
            # (1 - t^2 from a t off by its logit's error over cap, and its two roundings), and
            # the product's rounding
            f = {n: slope * x for n, x in f.items()}
            f["softcap"] = ads_z * (2 * r / cap + 2 * eps) + eps * ads
        # in units of eta: the underflowed weights against dP and delta (apart: a backward that
        # differentiates the normalization by the quotient rule multiplies each by them, and
        # underflowed roundings do not cancel), dS's own rounding (scaled or not: a kernel that
        # folds the scale into dS rounds s dS, and |k| multiplies that rounding without s),
        # through delta
        dpd = dp.abs() + delta.abs()
        folded = 1 / sc if sc else 0.0  # a zero scale leaves s dS = 0: nothing to round
        f_eta = mf * (dpd + 1 + folded) + p * (mf * dpd).sum(-1, keepdim=True)
        # in units of the accumulator's eta: a kernel that rescales its running sums by
        # exp(m_old - m_new) (online softmax) and differentiates through its running maximum
        # gets, at a key that was a running maximum (any key, for some chunking), the two
        # cancelling paths through a rescale factor that underflowed: off by eta_acc times the
        # weights (each at most 1 before rescaling) against dP and delta, the whole row at most
        acc = torch.float32 if case.dtype in (torch.float16, torch.bfloat16) else case.dtype
        eta_acc = underflow_unit(acc, flush_to_zero=ftz)
        f_acc = mf * (mf * dpd).sum(-1, keepdim=True)
        # partial sums in T: a kernel may add each block's (float32) sum into a T-valued gradient,
        # rounding it once per block of at least SMALLEST_TILE queries (dk, dv) or keys (dq):
        # torch's CPU flash-attention backward does, with blocks of 32 queries into dk and dv
        key_blocks, query_blocks = torch.ceil(rows / SMALLEST_TILE), torch.ceil(cols / SMALLEST_TILE)
        # the sizes of each gradient's terms, summed: its accumulation errors, and how large a
        # partial sum may grow (Budget.reach)
        reach.update(
            dq=sc * (ads @ k.abs()),
            dk=sc * (ads.transpose(-2, -1) @ q.abs()),
            dv=p.transpose(-2, -1) @ g64.abs(),
        )
        parts.update(
            dq={
                **{n: sc * t @ k.abs() for n, t in f.items()},
                "sums": (eps_acc * rows + u * key_blocks) * reach["dq"],
                "rounding": eps * truth["dq"].abs(),
                "underflow": eta * (sc * f_eta @ k.abs() + rows + 4) + eta_acc * (sc * f_acc @ k.abs()),
            },
            dk={
                **{n: sc * t.transpose(-2, -1) @ q.abs() for n, t in f.items()},
                "sums": (eps_acc * cols + u * query_blocks) * reach["dk"],
                "rounding": eps * truth["dk"].abs(),
                "underflow": eta * (sc * f_eta.transpose(-2, -1) @ q.abs() + cols + 4)
                + eta_acc * (sc * f_acc.transpose(-2, -1) @ q.abs()),
            },
            dv={
                "weights": pi.transpose(-2, -1) @ g64.abs(),
                "sums": (eps_acc * cols + u * query_blocks) * reach["dv"],
                "rounding": eps * truth["dv"].abs(),
                "underflow": eta * (mf.transpose(-2, -1) @ g64.abs() + cols + 4),
            },
        )
        rule.update(dq=3.0, dk=3.0, dv=3.0)
        if sinks is not None:  # the sinks' key and value are not inputs: their rows go
            for n in ("dk", "dv"):
                truth[n], reach[n] = truth[n][..., :lk, :], reach[n][..., :lk, :]
                parts[n] = {t: x[..., :lk, :] for t, x in parts[n].items()}
        if groups > 1:
            for n in ("dk", "dv"):
                b_, _, lk_, d_ = truth[n].shape
                reach[n] = reach[n].reshape(b_, -1, groups, lk_, d_).sum(2)
                truth[n] = truth[n].reshape(b_, -1, groups, lk_, d_).sum(2)
                # one accumulation over the whole group's G * Lq terms: each per-head sum bound
                # (n_h eps sum|terms_h|) grows to at most G times itself
                parts[n] = {
                    t: groups * x.reshape(b_, -1, groups, lk_, d_).sum(2) for t, x in parts[n].items()
                }

    if case.dtype == f64:  # the truth is computed in float64 too: both sides may be off by the floor
        parts = {n: {t: 2 * x for t, x in terms.items()} for n, terms in parts.items()}
    floor = {n: functools.reduce(torch.add, terms.values()) for n, terms in parts.items()}

    # the plain same-dtype result, and its error per row (per key for dk, dv); a float64 case
    # judged as float32 (``unit``) takes the plain float32 computation's
    device = "cpu" if case.device.type == "mps" else case.device
    plain_dtype = torch.float32 if lowered else case.dtype
    leaves = [
        t.detach().to(device=device, dtype=plain_dtype).requires_grad_(grads)
        for t in (case.q, case.k, case.v)
    ]
    whole = case.mask is None and case.causal is None and case.window is None
    mask = None if whole else case.full_mask.to(device)
    plain_bias = None if case.bias is None else case.bias.detach().to(device=device, dtype=plain_dtype)
    plain_sinks = None if case.sinks is None else case.sinks.detach().to(device=device, dtype=plain_dtype)
    plain_out = plain_attention(leaves[0], leaves[1], leaves[2], mask, scale, plain_bias, cap, plain_sinks)
    plain = {"out": plain_out}
    if grads:
        gp = vjp(plain_out, leaves, g.to(device=device, dtype=plain_dtype))
        for n, d, x in zip(("dq", "dk", "dv"), gp, leaves):
            plain[n] = torch.zeros_like(x) if d is None else d
    plain_error = {n: _finite_or_zero(_error(plain[n], truth[n])).amax(-1, keepdim=True) for n in truth}
    return Budget(truth, plain_error, floor, rule, case.dtype, reach, parts=parts)
