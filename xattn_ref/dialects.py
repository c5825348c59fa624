"""Dialects of the kernel interface: how a kernel wants to be called, declared once.

A case (:class:`~xattn_ref.cases.AttentionCase`) holds the meaning: which keys each query may
attend to (bool, **True = may attend**), the scale, a bias, the grouped kv heads. A
:class:`Dialect` says how that meaning is handed to the kernel, ``fn(q, k, v, mask, **kw)``.
Each field of :class:`Dialect` is one dialect option, declared once with its help: the CLI's
``--NAME``, the plugin's ``--xattn-NAME`` and ``$XATTN_NAME`` are made from it
(:data:`DIALECT_OPTIONS`); ``xattn-check --help`` lists them.

The reference's meaning of each mask form: a key is masked where the bool mask is False, where
the additive mask is ``-inf``, where the sentinel mask holds the sentinel; a row is *empty* when
every key is masked (by the mask, the causal mask or both). Biases never unmask a key.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from xattn_ref.errors import Inexpressible
from xattn_ref.options import Option, OptionType

if TYPE_CHECKING:
    import torch
    from hypothesis import strategies as st

    from xattn_ref.cases import AttentionCase

__all__ = ["DEFAULT_SCALES", "DIALECT_OPTIONS", "FUSED_HEAD_DIMS", "GQA_HEADS", "Dialect"]

#: Query heads drawn for grouped-query kernels (H_kv is drawn among the divisors of H).
GQA_HEADS: tuple[int, ...] = (4, 2, 6)

#: Scales drawn for kernels that take ``scale=``: 1 (T5, no scaling; the default scale only when
#: D = 1), 0.2 and 0.3 (never ``D ** -0.5`` for the drawn D: a kernel that ignores them is off).
DEFAULT_SCALES: tuple[float, ...] = (1.0, 0.2, 0.3)

#: Head dims of ``head_dims="fused"`` (Dv = D): multiples of 8 up to 128, which flash-attention,
#: cuDNN and SDPA's flash backend all take; 8 first, so examples shrink toward it.
FUSED_HEAD_DIMS: tuple[int, ...] = (8, 16, 64, 128)


def _option(
    help: str, *, kind: OptionType = "choice", choices: tuple[str, ...] = (), default: Any = None
) -> Any:
    """A field of :class:`Dialect` and its option: the default is the first choice, or off."""
    if default is None:
        default = choices[0] if choices else False
    option = Option("", help, type=kind, choices=choices, default=default)
    return dataclasses.field(default=default, metadata={"option": option})


@dataclass(frozen=True)
class Dialect:
    """How a kernel is called, one option per field (its help says what it means); the default
    is the plain interface ``fn(q, k, v, mask)`` with a bool mask, equal heads and the default scale."""

    layout: str = _option(
        "how q, k, v and the output lie: bhld, SDPA's (B, H, L, D); blhd, the (B, L, H, D) that "
        "flash-attention's flash_attn_func, xformers' memory_efficient_attention and FlashInfer take "
        "(the mask stays broadcastable to (B, H, Lq, Lk))", choices=("bhld", "blhd"))
    heads: str = _option(
        "equal: k, v with H heads; gqa: H_kv heads dividing H, query head h using kv head "
        "h // (H // H_kv) (SDPA's enable_gqa)", choices=("equal", "gqa"))
    gqa_mapping: str = _option(
        "with --heads gqa, the kv head of query head h: interleave, h // (H // H_kv) (SDPA's enable_gqa, "
        "repeat_interleave, Hugging Face's repeat_kv) or tile, h % H_kv (k.repeat(1, H // H_kv, 1, 1))",
        choices=("interleave", "tile"))
    mask: str = _option(
        "the mask argument: bool (True = may attend), additive (0/-inf float), sentinel (masked = "
        "--sentinel, as Hugging Face builds masks), block (a FlexAttention BlockMask, as Hugging Face's "
        "flex path and flex_attention(block_mask=) take) or none (no padding: only causal masks)",
        choices=("bool", "additive", "sentinel", "block", "none"))
    sentinel: str = _option(
        "masked value of sentinel masks: min (finfo(dtype).min) or a number such as -1e4 (rounded "
        "to the dtype)", kind="text", default="min")
    bias: bool = _option(
        "finite biases (ALiBi, learned) in the float mask's allowed entries; masked entries stay "
        "-inf or the sentinel", kind="switch")
    scale: bool = _option("the kernel takes scale= (drawn, not the default D ** -0.5)", kind="switch")
    causal: str = _option(
        "is_causal=True with this alignment: none, top_left (SDPA) or bottom_right "
        "(flash-attention >= 2.1); the mask carries the padding only",
        choices=("none", "top_left", "bottom_right"))
    fixed_causal: bool = _option(
        "with --causal ALIGNMENT: the kernel is causal by construction (Attend(causal=True)), so no "
        "is_causal is passed; the mask carries the padding only", kind="switch")
    causal_in_mask: bool = _option(
        "no is_causal: the causal mask travels in the mask with the padding (as Hugging Face "
        "builds them for batched generation)", kind="switch")
    key_padding: bool = _option("the mask is (B, Lk), one row of keys per batch element", kind="switch")
    window: bool = _option(
        "the kernel takes window_size=(left, right): flash-attention's sliding window (query i sees "
        "keys i + Lk - Lq - left to i + Lk - Lq + right; -1 unbounded); drawn with its edges near the "
        "diagonal often, on top of the mask", kind="switch")
    softcap: bool = _option(
        "the kernel takes softcap= (a float, 0.0 = none; flash-attention's): the scaled logits "
        "capped as softcap * tanh(s / softcap) before the mask, as Gemma 2 does; drawn from 1 to 50",
        kind="switch")
    sinks: bool = _option(
        "the kernel takes sinks= (a float tensor (H,)): a logit per query head in every row's "
        "softmax denominator, with no value, as gpt-oss, vLLM and FlashInfer have them",
        kind="switch")
    always_mask: bool = _option(
        "the kernel always takes a mask: never mask=None (drawn in one case in eight otherwise; a case "
        "with no padding then passes an all-True mask)", kind="switch")
    query_padding: bool = _option(
        "with --key-padding --self-attention: the (B, L) mask pads queries too, so a padded "
        "query allows no key (BERT-style encoders)", kind="switch")
    self_attention: bool = _option("Lq == Lk (one sequence attending to itself)", kind="switch")
    short_queries: bool = _option(
        "only cases with Lq <= Lk (causal kernels documented for no more queries than keys)", kind="switch")
    empty_rows: str = _option(
        "policy for rows with no allowed key: zero (exact zeros and zero gradients: SDPA >= 2.5, "
        "FlexAttention, flash-attention) or finite (any finite output, e.g. the mean of v as Hugging "
        "Face eager attention gives)", choices=("zero", "finite"))
    head_dims: str = _option(
        "any: D and Dv drawn apart (1 to 64); fused: Dv = D in 8, 16, 64, 128, what fused kernels "
        "(flash-attention, cuDNN) take", choices=("any", "fused"))
    memory: str = _option(
        "any: q, k, v and the mask drawn in every memory layout (transposed views, slices of a fused "
        "projection, a mask expanded with stride 0); contiguous: only contiguous tensors (a kernel "
        "documented to need them)", choices=("any", "contiguous"))
    forward_only: bool = _option(
        "the target is not differentiable: gradient properties are skipped, the forward halves of "
        "the others still run", kind="switch")

    def __post_init__(self) -> None:
        for option in DIALECT_OPTIONS:
            if option.type == "choice" and getattr(self, option.name) not in option.choices:
                raise ValueError(
                    f"{option.name} must be one of {', '.join(option.choices)}, "
                    f"got {getattr(self, option.name)!r}"
                )
        if self.sentinel != "min":
            try:
                float(self.sentinel)
            except ValueError:
                raise ValueError(f"sentinel must be 'min' or a number, got {self.sentinel!r}") from None
        if self.bias and self.mask not in ("additive", "sentinel"):
            raise ValueError("bias needs a float mask (mask additive or sentinel): the bias travels in it")
        if self.sentinel != "min" and self.mask != "sentinel":
            raise ValueError("sentinel applies to mask sentinel only")
        if self.gqa_mapping != "interleave" and self.heads != "gqa":
            raise ValueError("gqa_mapping applies to heads gqa only")
        if self.fixed_causal and (self.causal == "none" or self.causal_in_mask):
            raise ValueError("fixed_causal needs a causal alignment, and no causal_in_mask")
        if self.causal_in_mask and (self.causal == "none" or self.mask == "none"):
            raise ValueError("causal_in_mask needs a causal alignment and a mask to carry it")
        if self.query_padding and not (self.key_padding and self.self_attention):
            raise ValueError("query_padding needs key_padding and self_attention: one (B, L) mask for both")
        if self.mask == "block" and (self.key_padding or self.bias or self.gqa_mapping == "tile"):
            raise ValueError("mask block is (B, H, Lq, Lk) and bias-free: no key_padding, bias or tile")
        if self.always_mask and self.mask == "none":
            raise ValueError("always_mask needs a mask: with mask none there is never one")
        if self.key_padding and self.mask == "none":
            raise ValueError("key_padding describes the mask's shape; with mask none there is no mask")

    def __repr__(self) -> str:
        changed = [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != f.default
        ]
        return f"Dialect({', '.join(changed)})"

    def snippet(self) -> str:
        """Python that calls a kernel ``fn`` on ``case`` as the gate does, in this dialect ("" for
        the plain ``fn(q, k, v, mask)``)."""
        if self == Dialect():
            return ""
        return (
            "from xattn_ref.dialects import Dialect\n"
            f"args, kwargs = {self!r}.arguments(case)  # the mask in this dialect's form\n"
            "out = fn(*args.values(), **kwargs)"
        )

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Dialect:
        """The dialect of a target's options (the kind's, parsed); absent ones keep their defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{n: v for n, v in options.items() if n in names})

    def describe(self) -> str:
        """The non-default fields, as words for a report (``plain`` when there are none)."""
        words = ["(B, L, H, D) layout"] if self.layout == "blhd" else []
        words += ["sliding window"] if self.window else []
        words += ["soft-cap"] if self.softcap else []
        words += ["sinks"] if self.sinks else []
        if self.heads == "gqa":
            words.append("grouped-query heads" + (" (tiled)" if self.gqa_mapping == "tile" else ""))
        if self.mask != "bool":
            sentinel = f" ({self.sentinel})" if self.mask == "sentinel" else ""
            words.append(f"{self.mask} mask{sentinel}")
        if self.bias:
            words.append("bias")
        if self.scale:
            words.append("scale=")
        if self.causal != "none":
            words.append(
                f"causal {self.causal} in the mask"
                if self.causal_in_mask
                else f"causal {self.causal} by construction"
                if self.fixed_causal
                else f"is_causal ({self.causal})"
            )
        if self.key_padding:
            words.append("(B, L) mask on queries and keys" if self.query_padding else "(B, Lk) mask")
        if self.self_attention:
            words.append("self-attention")
        if self.memory == "contiguous":
            words.append("contiguous inputs")
        if self.short_queries:
            words.append("Lq <= Lk")
        if self.empty_rows != "zero":
            words.append(f"empty rows {self.empty_rows}")
        if self.head_dims == "fused":
            words.append("Dv = D, a multiple of 8")
        if self.forward_only:
            words.append("forward-only")
        return ", ".join(words) or "plain"

    def signature(self) -> str:
        """How the kernel is called, the mask convention included, in one line."""
        tiled = ", query head h using kv head h % H_kv" if self.gqa_mapping == "tile" else ""
        kv = f"k, v with H_kv heads (H_kv divides H{tiled})" if self.heads == "gqa" else "k, v"
        shape = "(B, Lk)" if self.key_padding else "broadcastable to (B, H, Lq, Lk)"
        sentinel = "finfo(dtype).min" if self.sentinel == "min" else self.sentinel
        mask = {
            "bool": f"mask None or bool {shape}, True = may attend",
            "additive": f"mask None or float {shape}, 0 = attend, -inf = masked",
            "sentinel": f"mask None or float {shape}, 0 = attend, {sentinel} = masked",
            "block": "mask None or a FlexAttention BlockMask over (B, H, Lq, Lk)",
            "none": "mask None",
        }[self.mask]
        if self.always_mask and self.mask != "none":
            mask = mask.replace("mask None or ", "mask ")
        if self.bias:
            mask += ", finite biases on allowed entries"
        is_causal = self.causal != "none" and not self.causal_in_mask and not self.fixed_causal
        kw = (", scale=s" if self.scale else "") + (", is_causal=True" if is_causal else "")
        kw += ", window_size=(left, right)" if self.window else ""
        kw += ", softcap=c" if self.softcap else ""
        kw += ", sinks=(H,)" if self.sinks else ""
        carried = " (in the mask)" if self.causal_in_mask else ""
        carried = " (by construction)" if self.fixed_causal else carried
        extra = [f"causal {self.causal}{carried}"] if self.causal != "none" else []
        extra += ["Lq == Lk"] if self.self_attention else []
        extra += ["Lq <= Lk"] if self.short_queries else []
        extra += ["contiguous inputs"] if self.memory == "contiguous" else []
        extra += ["padded queries allow no key"] if self.query_padding else []
        extra += [f"empty rows {self.empty_rows}"] if self.empty_rows != "zero" else []
        extra += ["Dv = D, a multiple of 8"] if self.head_dims == "fused" else []
        extra += ["forward-only"] if self.forward_only else []
        tail = "; " + ", ".join(extra) if extra else ""
        where = "all (B, L, H, D)" if self.layout == "blhd" else "in SDPA's layout"
        return f"fn(q, k, v, mask{kw}) -> out {where}; {kv}; {mask}{tail}"

    # --- cases ------------------------------------------------------------------------------

    def cases(self, dtype: torch.dtype, device: str) -> st.SearchStrategy[AttentionCase]:
        """The cases of this dialect: :func:`xattn_ref.strategies.attention_cases` with its
        arguments (one strategy object for each dialect, dtype and device: a run of every
        property builds it once)."""
        return _dialect_cases(self, dtype, device)

    def case_arguments(self) -> dict[str, Any]:
        """The arguments of :func:`~xattn_ref.strategies.attention_cases` that draw this dialect."""
        from hypothesis import strategies as st

        args: dict[str, Any] = {}
        if self.heads == "gqa":
            # H_kv among the divisors of H; H in {4, 2, 6} so that a third of the cases have
            # 1 < H_kv < H, where a wrong head mapping shows
            args.update(gqa=True, num_heads=st.sampled_from(GQA_HEADS))
        if self.mask == "none":
            args["allow_mask"] = False
        if self.always_mask:
            args["allow_no_mask"] = False
        if self.window:
            args["window"] = True
        if self.softcap:
            args["softcap"] = True
        if self.sinks:
            args["sinks"] = True
        if self.key_padding or self.causal != "none":
            args["mask_layouts"] = ["sequence_padding" if self.query_padding else "key_padding"]
        if self.bias:
            args["bias"] = True
        if self.scale:
            args["scale"] = st.sampled_from(DEFAULT_SCALES)
        if self.causal != "none":
            args["causal"] = self.causal
        if self.self_attention:
            args["self_attention"] = True
        if self.short_queries:
            args["short_queries"] = True
        if self.head_dims == "fused":
            args["head_dim"] = st.sampled_from(FUSED_HEAD_DIMS)
        if self.memory == "contiguous":
            args["memory_layouts"] = ["contiguous"]
        return args

    def probe(self, dtype: torch.dtype, device: str) -> AttentionCase:
        """One plain valid case of this dialect, to tell an unusable target early."""
        from xattn_ref.cases import BiasSpec, CaseSpec, MaskSpec, SlicePattern

        mask = None
        if self.mask != "none":
            layout = "sequence_padding" if self.query_padding else "key_padding"
            mask = MaskSpec(layout, (SlicePattern("all_true"), SlicePattern("right_padding", 3)))
        lq = 5 if self.self_attention else 3
        return CaseSpec(
            batch_size=2, num_heads=2, q_len=lq, kv_len=5, head_dim=8, value_dim=8,
            dtype=dtype, device=device, seed=0, logit_std=(1.0, 1.0), value_std=(1.0, 1.0), mask=mask,
            num_kv_heads=1 if self.heads == "gqa" else 0,
            scale=DEFAULT_SCALES[0] if self.scale else None,
            bias=BiasSpec("alibi") if self.bias else None,
            causal=None if self.causal == "none" else self.causal,
            softcap=30.0 if self.softcap else None,
            sinks=(0.5, -1.0) if self.sinks else None,
        ).build()

    # --- calls ------------------------------------------------------------------------------

    def arguments(self, case: AttentionCase) -> tuple[dict[str, Any], dict[str, Any]]:
        """The kernel's positional arguments (by name) and keyword arguments for ``case``."""
        import torch

        from xattn_ref.cases.memory import lay_out

        kwargs: dict[str, Any] = {}
        if self.scale:
            kwargs["scale"] = case.effective_scale
        if self.window:
            kwargs["window_size"] = case.window if case.window is not None else (-1, -1)
        elif case.window is not None:
            raise Inexpressible(f"a case with a sliding window {case.window} needs a kernel that takes one")
        if self.softcap and case.softcap is not None:  # none: the kernel's default (0.0, None)
            kwargs["softcap"] = case.softcap
        elif case.softcap is not None:
            raise Inexpressible(f"a case soft-capped at {case.softcap:g} needs a kernel that takes softcap=")
        sinks = case.sinks
        if sinks is not None and not self.sinks:
            raise Inexpressible("a case with attention sinks needs a kernel that takes sinks=")
        if self.causal != "none" and not self.causal_in_mask:
            if case.causal != self.causal:
                raise Inexpressible(
                    f"a case of causal={case.causal!r} cannot be given to a kernel causal with {self.causal}"
                )
            if not self.fixed_causal:
                kwargs["is_causal"] = True
        q, mask = case.q, self.render_mask(case)
        if mask is None and self.always_mask:  # a case with no mask (a sequence alone, unpadded)
            every = torch.ones(case.k.shape[0], 1, 1, case.k.shape[2], dtype=torch.bool, device=case.q.device)
            mask = self.render_mask(case.replace(mask=every))
        perm = self.head_order(case)
        if perm is not None:  # a tiling kernel: the query heads reordered so that it computes the case
            q = q[:, perm]
            if isinstance(mask, torch.Tensor) and mask.ndim == 4 and mask.shape[1] > 1:
                mask = mask[:, perm]
            sinks = None if sinks is None else sinks[perm]
        if self.sinks:
            kwargs["sinks"] = sinks
        # in the case's memory layout: the case's own tensors are; a contiguous one derived from
        # them (a clone, a reordering) is laid out again
        memory = case.memory
        named = ((q, "q"), (case.k, "k"), (case.v, "v"))
        q, k, v = (lay_out(t, memory, n) if t.is_contiguous() else t for t, n in named)
        if self.layout == "blhd":  # a (B, H, L, D) view of a (B, L, H, D) buffer is its own layout
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        return {"q": q, "k": k, "v": v, "mask": case.laid_out_mask(mask)}, kwargs

    def head_order(self, case: AttentionCase) -> list[int] | None:
        """With ``gqa_mapping="tile"``: the query heads in the order a tiling kernel is given
        them, so that its head j (kv head ``j % H_kv``) is the case's head ``perm[j]`` (kv head
        ``perm[j] // G`` in the case's interleaved meaning); None when nothing moves."""
        if self.gqa_mapping != "tile" or case.groups == 1:
            return None
        h, hkv, g = case.q.shape[1], case.k.shape[1], case.groups
        return [(j % hkv) * g + j // hkv for j in range(h)]

    def output_shape(self, case: AttentionCase) -> tuple[int, ...]:
        """The shape a kernel of this dialect returns for ``case``: ``(B, H, Lq, Dv)``, or
        ``(B, Lq, H, Dv)`` in the ``blhd`` layout."""
        b, h, lq, dv = case.q.shape[0], case.q.shape[1], case.q.shape[2], case.v.shape[-1]
        return (b, lq, h, dv) if self.layout == "blhd" else (b, h, lq, dv)

    def restore_heads(self, out: torch.Tensor, case: AttentionCase) -> torch.Tensor:
        """The output of a call made with :meth:`arguments` as ``(B, H, Lq, Dv)``, its heads in
        the case's order."""
        if self.layout == "blhd":
            out = out.transpose(1, 2)
        perm = self.head_order(case)
        if perm is None:
            return out
        inverse = [0] * len(perm)
        for j, h in enumerate(perm):
            inverse[h] = j
        return out[:, inverse]

    def _padding_rows(self, explicit: torch.Tensor) -> torch.Tensor:
        """The ``(B, L)`` rows of a key-padding mask ``(B, 1, 1, L)``, or with ``query_padding``
        of a sequence-padding mask ``(B, 1, L, L)`` (its diagonal: pad_i and pad_i)."""

        if explicit.ndim == 4 and explicit.shape[1:3] == (1, 1) and not self.query_padding:
            return explicit[:, 0, 0, :]
        if self.query_padding and explicit.ndim == 4 and explicit.shape[1] == 1:
            pad = explicit[:, 0].diagonal(dim1=-2, dim2=-1)
            if bool((explicit[:, 0] == (pad[:, :, None] & pad[:, None, :])).all()):
                return pad
        raise Inexpressible("a (B, L) mask needs a padding case: mask (B, 1, 1, L), or (B, 1, L, L) for both")

    def masked_value(self, dtype: torch.dtype) -> float:
        """What a masked key holds in a float mask of this dialect."""
        import torch

        if self.mask == "sentinel":
            return float(torch.finfo(dtype).min) if self.sentinel == "min" else float(self.sentinel)
        return float("-inf")

    def render_mask(self, case: AttentionCase) -> Any:
        """The case's mask (without the causal part, which ``is_causal`` or the kernel carries) in this
        dialect's form: a new tensor, or None."""
        import torch

        if self.mask == "none":
            if case.mask is not None or case.bias is not None:
                raise Inexpressible("a case with a mask or bias cannot be given to a kernel that takes none")
            return None
        explicit = case.mask
        if (self.causal == "none" or self.causal_in_mask) and case.causal is not None:
            # no is_causal: the causal part travels in the mask
            explicit = case.full_mask
        if self.key_padding and explicit is not None:
            explicit = self._padding_rows(explicit)
        if self.mask == "bool":
            return explicit  # the case's own tensor (or a view): mutation shows
        if self.mask == "block":
            return None if explicit is None else _block_mask(explicit, case)
        if explicit is None and case.bias is None:
            return None
        values = torch.zeros((), dtype=case.dtype, device=case.device) if case.bias is None else case.bias
        if self.key_padding and case.bias is not None:
            raise Inexpressible("a bias needs a (B, H, Lq, Lk) mask, not a (B, Lk) one")
        allowed = torch.ones((), dtype=torch.bool, device=case.device) if explicit is None else explicit
        fill = torch.tensor(self.masked_value(case.dtype), dtype=case.dtype, device=case.device)
        return torch.where(allowed, values, fill)


def _block_mask(allowed: torch.Tensor, case: AttentionCase) -> Any:
    """A FlexAttention ``BlockMask`` that allows what the bool mask ``allowed`` allows."""
    from torch.nn.attention.flex_attention import create_block_mask

    b, h, lq, _ = case.q.shape
    full = allowed.expand(b, h, lq, case.k.shape[2])

    def mask_mod(bi: Any, hi: Any, qi: Any, ki: Any) -> Any:
        return full[bi, hi, qi, ki]

    return create_block_mask(mask_mod, b, h, lq, case.k.shape[2], device=str(case.device))


#: The dialect options, one per field of :class:`Dialect`, in its order.
DIALECT_OPTIONS: tuple[Option, ...] = tuple(
    dataclasses.replace(f.metadata["option"], name=f.name) for f in dataclasses.fields(Dialect)
)


@functools.lru_cache(maxsize=256)
def _dialect_cases(dialect: Dialect, dtype: torch.dtype, device: str) -> st.SearchStrategy[AttentionCase]:
    from xattn_ref.strategies import attention_cases

    return attention_cases(dtypes=[dtype], devices=[device], **dialect.case_arguments())
