"""Monte Carlo arithmetic for black-box float64 computations (layers, whose internals the
tolerance model cannot see).

Inside :func:`perturbed`, every functional aten operation on float64 tensors (forward and
backward) runs on inputs each multiplied by ``1 + d``, ``|d| <= eps + sqrt(k) eps_sum``, and its
results by ``1 + d``, ``|d| <= eps`` (``d`` uniform, seeded): the float64 computation carries
rounding errors of the size a computation in a dtype of rounding unit ``eps`` makes, in the same
operations, with random signs (Parker's Monte Carlo arithmetic, as Verificarlo does it).
``eps_sum`` is ``eps_acc`` (float32's for half-precision inputs) for matrix products and
attention kernels, which accumulate in float32, and ``eps`` for other reductions (torch's CPU
layer norm backward sums a half-precision bias gradient in half precision: a float16 BERT
layer's was 4 ulps off over 51 positions).

- ``eps`` on the inputs and the results: each is stored in the dtype (one rounding, at most
  ``eps / 2``; a library function may be off by one ulp).
- ``k`` is the operation's reduction length (the K of a matrix product, the keys plus the head
  dim of an attention kernel, the reduced elements of a sum or softmax; 1 for elementwise
  operations): a sum of ``k`` products accumulated in floating point is the exact sum of the
  products each off by up to ``k u_acc`` (its backward error), about ``sqrt(k) u_acc`` for
  roundings of random signs (Higham and Mary's probabilistic bound).
- Perturbing the inputs matters beyond that: an operation whose exact result cancels to zero (a
  softmax's backward over a row with one allowed key: ``dP - sum_j P_j dP_j``) gives 0 for inputs
  that agree, where a kernel that computes the two terms apart is off by ``eps |dP|``.
- Kinks (:data:`KINKS`: a ReLU, a clamp, an ordering of float values) are recorded with the
  values they decide on (:attr:`Perturbation.decisions`), so that :func:`near_kink` can tell
  whether any value came close enough to a kink for a rounding to take it across: with
  ``eps = 0`` nothing is perturbed and the mode only records, which gives the exact decisions.
- Views and in-place operations run as they are (their results alias their inputs). Values
  beyond ``limit`` (the range of the dtype simulated) stay as they are: there they are sentinels
  such as float64's ``finfo.min`` in a mask, which the computation in that dtype writes as its
  own exact constant, and perturbing them apart by ``eps`` of their size would tell apart keys
  that no rounding tells apart (a row of equal sentinels would attend to one key, not all).
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable, Iterator
from typing import Any, Self

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = [
    "KINKS",
    "KINK_MARGIN",
    "ObservingMode",
    "Perturbation",
    "near_kink",
    "perturbed",
    "reduction_length",
]

#: Operations whose result, or whose derivative, jumps where an input crosses a point (a unit of a
#: piecewise-linear activation switching on or off): a rounding there may change a gradient by a
#: whole term, which no error bound of the rounding's size covers.
KINKS = frozenset(
    {
        "relu",
        "relu_",
        "relu6",
        "threshold",
        "threshold_",
        "threshold_backward",
        "hardtanh",
        "hardtanh_",
        "hardtanh_backward",
        "leaky_relu",
        "leaky_relu_",
        "leaky_relu_backward",
        "hardsigmoid",
        "hardsigmoid_",
        "hardsigmoid_backward",
        "hardswish",
        "hardswish_",
        "hardswish_backward",
        "prelu",
        "clamp",
        "clamp_",
        "clamp_min",
        "clamp_min_",
        "clamp_max",
        "clamp_max_",
        "abs",
        "abs_",
        "sign",
        "maximum",
        "minimum",
        # an ordering of float values decides a branch (torch.where(h > 0, h, 0) is a ReLU);
        # equality tests are not here: they read exact masks (attention_mask == 0)
        "gt",
        "lt",
        "ge",
        "le",
    }
)

#: How far from a kink, in units of the largest deviation the samples show in the value decided on
#: (or of one rounding of its size, if larger), every value must lie for no rounding to be
#: taken to cross it (:func:`near_kink`).
KINK_MARGIN = 4.0

#: A decision: the offsets of the values decided on from each kink point (``x - point``), each
#: with the size that one rounding of its operands is relative to; ``None`` where the operation's
#: arguments are not understood (then it counts as near a kink).
Decision = list[tuple[torch.Tensor, float]] | None

_MATMULS = {"mm", "bmm", "addmm", "baddbmm", "addbmm", "matmul", "dot", "mv", "addmv", "linear"}


def reduction_length(name: str, tensors: list[torch.Tensor], results: list[torch.Tensor]) -> int:
    """How many products each result element of the aten operation ``name`` sums (at least 1)."""
    if not tensors:
        return 1
    if name in _MATMULS:
        a = tensors[1] if name.startswith("add") or name == "baddbmm" else tensors[0]
        return max(1, a.shape[-1]) if a.ndim else 1
    if _attention(name) and len(tensors) >= 2 and tensors[0].ndim >= 2 and tensors[1].ndim >= 2:
        # q (.., Lq, D), k (.., Lk, D), ...: D products per logit, Lk weights per output
        return max(1, tensors[0].shape[-1] + max(t.shape[-2] for t in tensors[:3] if t.ndim >= 2))
    if "norm" in name and tensors[0].ndim:  # over the features; a backward's weight and bias
        last = max(1, tensors[0].shape[-1])  # gradients over the positions
        return max(last, tensors[0].numel() // last)
    if "softmax" in name:
        return max(1, tensors[0].shape[-1]) if tensors[0].ndim else 1
    largest = max(t.numel() for t in tensors)
    smallest_out = min((r.numel() for r in results), default=largest) or 1
    return max(1, largest // smallest_out)  # a sum or mean: the elements it reduces


def _decision(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Decision:
    """What the kink operation ``name`` decides on (see :data:`Decision`)."""
    base = name.removesuffix("_")
    given = list(args) + [kwargs[k] for k in ("min", "max", "min_val", "max_val") if k in kwargs]
    if not given or not _float64(given[0]):
        return None
    x = given[0]
    if not x.numel():
        return []
    if base in ("relu", "leaky_relu", "prelu", "abs", "sign"):
        points: list[Any] = [0.0]
    elif base == "relu6":
        points = [0.0, 6.0]
    elif base in ("hardsigmoid", "hardswish"):
        points = [-3.0, 3.0]
    elif base == "hardtanh":
        points = [given[1] if len(given) > 1 else -1.0, given[2] if len(given) > 2 else 1.0]
    elif base in ("threshold", "clamp", "clamp_min", "clamp_max"):
        points = [p for p in given[1 : 3 if base == "clamp" else 2] if p is not None]
    elif base in ("maximum", "minimum", "gt", "lt", "ge", "le"):
        points = given[1:2]
    else:
        return None
    out = []
    for p in points:
        if not isinstance(p, (int, float)) and not _float64(p):
            return None
        size = float(x.abs().max()) + (float(p.abs().max()) if isinstance(p, torch.Tensor) else abs(p))
        out.append(((x - p).detach().cpu(), size))
    return out


def near_kink(exact: list[Decision], samples: list[list[Decision]], eps: float) -> bool:
    """Whether some value a kink decides on lies within :data:`KINK_MARGIN` times its largest
    deviation in the ``samples`` (or one rounding ``eps`` of its size, if larger) of a kink, in
    the ``exact`` run's decisions: there a rounding may take it across and change a gradient by a
    whole term. True also where the runs' decisions do not match one to one (another path)."""
    if any(len(s) != len(exact) for s in samples):
        return True
    for i, decision in enumerate(exact):
        taken = [s[i] for s in samples]
        if decision is None or any(t is None or len(t) != len(decision) for t in taken):
            return True
        for j, (offset, size) in enumerate(decision):
            moved = [t[j][0] for t in taken if t is not None]
            if any(m.shape != offset.shape for m in moved):
                return True
            deviation = max([float((m - offset).abs().max()) for m in moved] + [eps * size])
            if not math.isfinite(deviation) or bool((offset.abs() <= KINK_MARGIN * deviation).any()):
                return True
    return False


class ObservingMode(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """A dispatch mode that watches a run and is never itself compiled.

    torch wraps a mode's ``__torch_dispatch__`` so that ``torch.compile`` skips it, and the
    wrapper imports ``torch._dynamo`` on its first call: about 1.2 s, once in every process that
    judges a case. These modes opt out of that wrapper and skip the compiler themselves, only
    where it is loaded (a compiled region needs it loaded): on entering a mode while
    ``torch._dynamo`` is imported, its ``__torch_dispatch__`` is wrapped in
    ``torch._dynamo.disable``, once."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False

    def __enter__(self) -> Self:
        cls = type(self)
        if "torch._dynamo" in sys.modules and not cls.__dict__.get("_skips_dynamo"):
            import torch._dynamo

            raw = cls.__dict__.get("__torch_dispatch__")
            if raw is not None:
                skipped = torch._dynamo.disable(raw, recursive=True)  # type: ignore[no-untyped-call]
                cls.__torch_dispatch__ = skipped  # type: ignore[method-assign]
            setattr(cls, "_skips_dynamo", True)  # noqa: B010 (a flag of this class alone, not inherited)
        super().__enter__()  # type: ignore[no-untyped-call]
        return self


class Perturbation(ObservingMode):
    """The mode :func:`perturbed` runs in; ``kinks``: the operations of :data:`KINKS` it saw,
    ``decisions``: what each of their calls decided on, in order (:func:`near_kink`)."""

    def __init__(self, eps: float, eps_acc: float, seed: int, limit: float) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.eps = eps
        self.eps_acc = eps_acc
        self.seed = seed
        self.limit = limit
        self.generators: dict[torch.device, torch.Generator] = {}
        self.kinks: set[str] = set()
        self.decisions: list[Decision] = []

    def _nudge(self, t: Any, eps: float) -> Any:
        if not _float64(t) or not t.numel():
            return t
        gen = self.generators.get(t.device)
        if gen is None:
            gen = self.generators[t.device] = torch.Generator(t.device).manual_seed(self.seed)
        d = torch.rand(t.shape, generator=gen, dtype=t.dtype, device=t.device).mul_(2).sub_(1)
        return torch.where(t.abs() <= self.limit, t * (1 + eps * d), t)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        schema = func._schema
        name = schema.name.split("::")[-1]
        tensors = [t for t in _leaves((args, kwargs)) if _float64(t)]
        kink = name in KINKS and bool(tensors)
        if kink:
            self.kinks.add(name)
        # a backward of a kink (threshold_backward of a ReLU) replays the forward's decision on
        # what the forward saved (its output, 0 where a unit is off): the forward's is recorded
        kink = kink and not name.endswith("_backward")
        aliases = schema.is_mutable or any(r.alias_info is not None for r in schema.returns)
        if aliases or not tensors or not (self.eps or self.eps_acc):
            if kink:
                self.decisions.append(_decision(name, args, kwargs))
            return func(*args, **kwargs)
        exact = func(*args, **kwargs)
        k = reduction_length(name, tensors, [r for r in _leaves(exact) if _float64(r)])
        fused = name in _MATMULS or _attention(name)  # float32 accumulators for half inputs
        within = self.eps + (self.eps_acc if fused else self.eps) * math.sqrt(k)
        args, kwargs = _map(lambda t: self._nudge(t, within), (args, kwargs))
        if kink:
            self.decisions.append(_decision(name, args, kwargs))
        return _map(lambda t: self._nudge(t, self.eps), func(*args, **kwargs))


# An aten operation's arguments and results are tensors and scalars in tuples, lists and dicts
# (kwargs): walked in order here, at a tenth of the cost of torch's general pytree, which ran
# for every operation of a layer's Monte Carlo samples.
def _leaves(x: Any) -> Iterator[Any]:
    if type(x) in (tuple, list):
        for y in x:
            yield from _leaves(y)
    elif type(x) is dict:
        for y in x.values():
            yield from _leaves(y)
    else:
        yield x


def _map(fn: Callable[[Any], Any], x: Any) -> Any:
    if type(x) is tuple:
        return tuple(_map(fn, y) for y in x)
    if type(x) is list:
        return [_map(fn, y) for y in x]
    if type(x) is dict:
        return {k: _map(fn, v) for k, v in x.items()}
    return fn(x)


def _attention(name: str) -> bool:
    return "attention" in name or "attn" in name


#: the dtype the perturbed computation runs in (float64, or float32 where a model's float64 path
#: is broken: :func:`perturbed`'s ``base``)
_BASE: list[torch.dtype] = [torch.float64]


def _float64(t: Any) -> bool:
    """Whether ``t`` is a tensor of the base dtype (float64 unless :func:`perturbed` says so)."""
    return isinstance(t, torch.Tensor) and t.dtype == _BASE[-1]


@contextlib.contextmanager
def perturbed(
    eps: float,
    *,
    eps_acc: float | None = None,
    seed: int,
    limit: float = torch.finfo(torch.float64).max,
    base: torch.dtype = torch.float64,
) -> Iterator[Perturbation]:
    """Every float64 operation run inside perturbed as the module docstring says (``eps``: the
    rounding unit simulated; ``eps_acc``: the accumulator's, default ``eps``; ``limit``: the
    largest size perturbed; ``base``: the dtype whose operations are perturbed, float64 unless a
    computation's float64 path is broken); the same ``seed`` gives the same perturbations."""
    _BASE.append(base)
    try:
        with Perturbation(eps, eps if eps_acc is None else eps_acc, seed, limit) as mode:
            yield mode
    finally:
        _BASE.pop()
