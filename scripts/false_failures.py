"""Sweep: run every property × dtype of the correct built-in targets (kernels and layers) and of
three correct kernels written differently (chunked online softmax in float32; the same with
flash-attention's backward from a float32 logsumexp; eager attention, the scores in the input
dtype) over many seeds, and count failures. Correct targets must never fail (no false failures).

A NaN, or an infinity where the float64 truth within its allowance stays inside the dtype's
range, is not a question of tolerance (a looser model would not excuse a NaN, and would excuse
such an infinity only by reaching the range): such a failure (``finite_output``,
``finite_grad``, or a comparison whose root is one of them) is listed as a non-finite result of
the target itself, apart from the false failures, and does not fail the sweep.

    python scripts/false_failures.py --seeds 20 --examples 50
    python scripts/false_failures.py --layers --seeds 20 --examples 50   # correct layers only
    python scripts/false_failures.py --models --seeds 20 --examples 30   # correct models only

``--layers`` runs every layer property of six correct layers instead: the built-in ones
(cross-attention with ``safe_sdpa``, ``nn.MultiheadAttention`` with ``need_weights=False``,
``nn.TransformerEncoderLayer``), ``nn.TransformerDecoderLayer``, ``nn.MultiheadAttention``
self-attention and Hugging Face's ``BertLayer`` (E = 16): their gradients are judged by a
measured error (Monte Carlo arithmetic), which only such a sweep shows is never too small.
``--models`` runs every model property of :data:`MODELS` (docs/models.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import torch

from xattn_ref import plan
from xattn_ref._devices import ALL_DTYPES
from xattn_ref.kinds import resolve_options
from xattn_ref.profiles import profile_settings
from xattn_ref.runner import run_tasks
from xattn_ref.targets import load_target
from xattn_ref.zoo.builtins import BUILTINS

#: Correct layers (E = 16) and their kinds, for ``--layers``.
LAYERS = (
    ("xattn_ref.zoo.adapters:cross_attention_layer()", "layer"),
    ("xattn_ref.zoo.kernels:mha_layer_need_weights_false()", "layer"),
    ("xattn_ref.zoo.adapters:decoder_layer()", "layer"),
    ("xattn_ref.zoo.adapters:transformer_encoder_layer()", "encoder"),
    ("xattn_ref.zoo.adapters:self_attention_layer()", "encoder"),
    ("xattn_ref.zoo.adapters:hf_bert_layer()", "encoder"),
)

#: Correct models and their options, for ``--models``, in every dtype: a float64 run that Hugging
#: Face computes partly in float32 is judged at float32's unit (xattn_ref.precision). gpt-oss takes
#: no float64 (its float32 run is the base). Gemma 2 (eager only) is left out: its eager attention
#: is NaN in float64 and its parameter gradients in float16 (docs/models.md, M1 and M6), findings
#: the sweep would count as non-finite results, not tolerance.
MODELS = (
    ("xattn_ref.zoo.tiny_models:TinyLM()", {"vocab": 32}, ALL_DTYPES),
    ("xattn_ref.zoo.tiny_models:TinySeq2Seq()", {"vocab": 32, "arch": "seq2seq"}, ALL_DTYPES),
    ('xattn_ref.zoo.hf_models:causal_lm("llama")', {}, ALL_DTYPES),
    ('xattn_ref.zoo.hf_models:causal_lm("qwen2")', {}, ALL_DTYPES),
    ('xattn_ref.zoo.hf_models:causal_lm("qwen3")', {}, ALL_DTYPES),
    ('xattn_ref.zoo.hf_models:causal_lm("mistral")', {}, ALL_DTYPES),
    ('xattn_ref.zoo.hf_models:causal_lm("gpt_oss")', {}, ALL_DTYPES[1:]),
    ('xattn_ref.zoo.hf_models:causal_lm("gpt2")', {}, ALL_DTYPES),
    ('xattn_ref.zoo.hf_models:encoder("bert")', {"padding_side": "right"}, ALL_DTYPES),
)

#: Correct kernels of the dialects that no built-in has, each with its options, for the default
#: sweep and ``--dialects`` (alone): a sliding window, soft-capping and sinks (each, and both),
#: the (B, L, H, D) layout, packed varlen sequences with a NaN tail, and a paged KV cache (chunks,
#: and decode steps in pages of 16; gathered, split by page with a log-sum-exp merge, in
#: FlashInfer's HND layout and through its CSR page table), and
#: Hugging Face's sdpa function with a sliding window, or a causal part, in its mask.
DIALECT_TWINS = (
    ("xattn_ref.zoo.kernels:windowed_kernel", "kernel", {"window": True}),
    ("xattn_ref.zoo.kernels:softcap_sinks_kernel", "kernel", {"softcap": True}),
    ("xattn_ref.zoo.kernels:softcap_sinks_kernel", "kernel", {"sinks": True}),
    ("xattn_ref.zoo.kernels:softcap_sinks_kernel", "kernel", {"softcap": True, "sinks": True, "heads": "gqa"}),  # noqa: E501
    ("xattn_ref.zoo.kernels:flash_layout_kernel", "kernel", {"layout": "blhd"}),
    ("xattn_ref.zoo.kernels:varlen_reference_kernel", "varlen", {}),
    ("xattn_ref.zoo.kernels:paged_reference_kernel", "paged", {"queries": "chunk"}),
    ("xattn_ref.zoo.kernels:paged_reference_kernel", "paged", {"queries": "decode", "block_size": 16}),
    ("xattn_ref.zoo.kernels:paged_split_kernel", "paged", {"queries": "chunk"}),
    ("xattn_ref.zoo.kernels:paged_hnd_kernel", "paged", {"cache_layout": "hnd"}),
    ("xattn_ref.zoo.kernels:paged_csr_kernel", "paged", {"table": "csr"}),
    ("transformers.integrations.sdpa_attention:sdpa_attention_forward", "hf", {"window": True, "mask": "bool"}),  # noqa: E501
    ("transformers.integrations.sdpa_attention:sdpa_attention_forward", "hf", {"causal": "bottom_right", "mask": "bool"}),  # noqa: E501
)

#: Properties whose failure is a NaN, or an infinity the allowance does not reach.
NONFINITE = {"finite_output", "finite_grad"}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--examples", type=int, default=50, help="examples per property, dtype and seed")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--layers", action="store_true", help="six correct layers instead (see above)")
    parser.add_argument("--models", action="store_true", help="the correct models instead (see above)")
    parser.add_argument("--dialects", action="store_true", help="the dialects' correct kernels alone")
    parser.add_argument("--only", default="", help="with --models, --dialects: the specs that contain this")
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = profile_settings("dev", max_examples=args.examples)
    dtypes: dict[str, tuple[torch.dtype, ...]] = {}
    if args.models:
        chosen = [m for m in MODELS if args.only in m[0]]
        targets = [load_target(s, "model", resolve_options("model", o, prefix="")) for s, o, _ in chosen]
        dtypes = {t.name: d for t, (_, _, d) in zip(targets, chosen)}
    elif args.layers:
        targets = [load_target(s, k, resolve_options(k, {"dim": 16}, prefix="")) for s, k in LAYERS]
    else:
        targets = [] if args.dialects else [b.load() for b in BUILTINS if b.should_pass]
        written = ("online_softmax_kernel", "flash_backward_kernel", "eager_kernel")
        targets += [load_target(f"xattn_ref.zoo.kernels:{n}") for n in (() if args.dialects else written)]
        for spec, kind, options in DIALECT_TWINS:
            if (not options and not args.dialects) or args.only not in spec:  # a built-in already
                continue
            target = load_target(spec, kind, resolve_options(kind, options, prefix=""))
            words = ",".join(f"{n}={v}" for n, v in options.items())
            targets.append(dataclasses.replace(target, name=f"{spec}[{words}]" if words else spec))
    properties = {t.name: plan.select_properties(t.kind, None, None) for t in targets}
    tasks = [
        t
        for t in plan.tasks(targets, properties, ALL_DTYPES, ["cpu"])
        if t.dtype in dtypes.get(targets[t.target].name, ALL_DTYPES)
    ]
    start, runs, examples, failures, nonfinite = time.perf_counter(), 0, 0, 0, 0
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for r in run_tasks(targets, tasks, settings=settings, seed=seed, jobs=args.jobs):
            runs, examples = runs + r.tested, examples + r.examples
            if r.status == "failed" and NONFINITE & {r.property, r.root}:
                nonfinite += 1
                print(f"NON-FINITE seed={seed} {r.target} {r.id}: {r.message}\n  {r.case}", flush=True)
            elif r.status in ("failed", "error"):
                failures += 1
                print(f"FALSE FAILURE seed={seed} {r.target} {r.id}: {r.message}\n  {r.case}", flush=True)
    elapsed = time.perf_counter() - start
    print(
        f"{failures} false failures, {nonfinite} non-finite results the model does not admit, in {runs} "
        f"runs ({examples} examples, seeds {args.first_seed}-{args.first_seed + args.seeds - 1}, "
        f"targets {', '.join(t.name for t in targets)}) in {elapsed:.0f} s"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
