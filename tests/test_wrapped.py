"""Models reached as their users wrap them: a ``**kwargs`` subclass, a PEFT model, a compiled
module and a plain function over a model get the plain module's verdicts (position ids, cached
decoding, their parameters' gradients, the allowance of the model itself in each dtype), and a
cache defect is caught through each wrapper that can take a cache."""

from __future__ import annotations

import functools
import importlib.util

import pytest
import torch
from targets import wrapped_models as w

from tests._support import run
from xattn_ref.targets import as_target
from xattn_ref.wrapped import accepts, inner_model, modules_of, rebound
from xattn_ref.zoo.hf_models import causal_lm

PROPS = ["finite_grad", "compaction_equivalence", "padding_side_invariance", "cached_decoding"]
needs_peft = pytest.mark.skipif(importlib.util.find_spec("peft") is None, reason="peft is not installed")


def verdicts(model, dtype=torch.float32, props=PROPS):
    return {p: run(p, model, dtype, kind="model", max_examples=6) for p in props}


@functools.cache
def plain_verdicts() -> dict[str, str]:
    return {p: r.status for p, r in verdicts(causal_lm("llama")).items()}


# compiled: dynamo traces each new shape (20 s), so in the sweep tier
COMPILED = pytest.param("compiled", marks=pytest.mark.sweep)


@pytest.mark.parametrize("wrapper", ["kwargs", pytest.param("peft", marks=needs_peft), COMPILED])
def test_a_wrapped_llama_gets_the_plain_modules_verdicts_and_its_cache_defect_is_caught(wrapper):
    plain = plain_verdicts()
    assert plain == dict.fromkeys(PROPS, "passed")
    wrapped = verdicts(w.WRAPPERS[wrapper]())
    assert {p: r.status for p, r in wrapped.items()} == plain, {p: r.message for p, r in wrapped.items()}
    bad = run("cached_decoding", w.cache_defect_through(wrapper), kind="model", max_examples=20)
    assert bad.status == "failed", bad.message


def test_a_plain_function_over_a_model_runs_in_each_dtype_with_its_parameters():
    fn = w.function_over(causal_lm("llama"))
    target = as_target(fn, kind="model")
    assert target.options["vocab"] == 64  # read from the model underneath
    half = target.fn_for(torch.float16, "cpu")
    (held,) = modules_of(half).values()
    assert held.dtype == torch.float16 and next(iter(modules_of(fn).values())).dtype == torch.float32
    assert inner_model(half) is held
    results = verdicts(fn, props=["finite_grad", "compaction_equivalence", "dtype_consistency"])
    assert {p: r.status for p, r in results.items()} == dict.fromkeys(results, "passed")
    # no cache can be passed through a plain function: n/a, with the way to hand the model over
    r = run("cached_decoding", fn, kind="model", max_examples=5)
    assert r.status == "not-applicable" and "name the model itself" in r.message


def test_defects_show_through_a_plain_function_in_every_dtype_it_is_asked_for():
    """Without its model copied to each dtype, a function's "float64" run would be its float32
    model again, and a model computing in float16 would pass dtype_consistency."""
    from xattn_ref.zoo.known_bad import attends_to_padding, half_precision_model

    half = run("dtype_consistency", w.function_over(half_precision_model(), positions=False), kind="model",
               vocab=32, max_examples=20)  # fmt: skip
    assert half.status == "failed", half.message
    padding = run("padding_invariance", w.function_over(attends_to_padding(), positions=False), kind="model",
                  vocab=32, max_examples=20)  # fmt: skip
    assert padding.status == "failed", padding.message


def test_a_plain_function_over_a_global_model_gets_the_modules_verdicts():
    results = verdicts(
        w.gpt2_function, props=["finite_grad", "compaction_equivalence", "padding_side_invariance"]
    )
    assert {p: r.status for p, r in results.items()} == dict.fromkeys(results, "passed")
    copy = rebound(w.gpt2_function, torch.float64, "cpu")
    assert modules_of(copy)["_GPT2"] is not w._GPT2 and w._GPT2.dtype == torch.float32


def test_accepts_looks_through_kwargs_to_the_forward_that_names_its_parameters():
    plain = causal_lm("llama")
    for model in (w.kwargs_llama(), w.compiled_llama()):
        assert accepts(model, "position_ids") and not accepts(model, "no_such_argument")
        for name in ("cache", "past_key_values"):  # whichever this transformers names
            assert accepts(model, name) == accepts(plain, name)
    assert not accepts(w.function_over(causal_lm("llama")), "position_ids")
