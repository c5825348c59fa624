"""A tiny Llama (and GPT-2) as users hand models over, for tests/test_wrapped.py: a subclass
whose forward takes ``**kwargs``, a PEFT model with a LoRA adapter, a compiled module, a plain
function over a model held in a closure or as a module global; and the known-bad Llama whose
cached steps drop the mask, through the same wrappers."""

from __future__ import annotations

import torch
from transformers import LlamaForCausalLM

from xattn_ref.zoo.hf_models import causal_lm
from xattn_ref.zoo.known_bad import cache_drops_mask


class KwargsLlama(LlamaForCausalLM):
    def forward(self, *args, **kwargs):  # a subclass that adds a hook, logging, ...
        return super().forward(*args, **kwargs)


def kwargs_llama(model=None):
    model = causal_lm("llama") if model is None else model
    wrapped = KwargsLlama(model.config)
    wrapped.load_state_dict(model.state_dict())
    return wrapped.eval()


def peft_llama(model=None):
    from peft import LoraConfig, get_peft_model

    model = causal_lm("llama") if model is None else model
    return get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).eval()


def compiled_llama(model=None):
    return torch.compile(causal_lm("llama") if model is None else model, backend="eager", dynamic=True)


def function_over(model, *, positions=True):
    def call(input_ids, attention_mask):  # the model in a closure; positions from the mask
        if not positions:  # a plain model: fn(input_ids, attention_mask) -> logits
            return model(input_ids, attention_mask)
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        return model(input_ids, attention_mask=attention_mask, position_ids=position_ids).logits

    return call


_GPT2 = causal_lm("gpt2")


def gpt2_function(input_ids, attention_mask):  # the model as a global of this module
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return _GPT2(input_ids, attention_mask=attention_mask, position_ids=positions).logits


WRAPPERS = {"kwargs": kwargs_llama, "peft": peft_llama, "compiled": compiled_llama}


class KwargsCacheDropsMask(LlamaForCausalLM):
    """``known_bad.cache_drops_mask`` written as a ``**kwargs`` subclass."""

    def forward(self, *args, **kwargs):
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if cache is not None and cache.get_seq_length() > 0:
            kwargs["attention_mask"] = None  # the defect: "the cache holds only real tokens"
        return super().forward(*args, **kwargs)


def cache_defect_through(wrapper: str):
    """The known-bad Llama whose cached steps drop the mask, through ``wrapper``."""
    bad = cache_drops_mask()
    if wrapper == "kwargs":
        wrapped = KwargsCacheDropsMask(bad.config)
        wrapped.load_state_dict(bad.state_dict())
        return wrapped.eval()
    return WRAPPERS[wrapper](bad)
