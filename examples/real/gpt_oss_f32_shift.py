import torch
from torch.nn import functional as F
from transformers.models.gpt_oss.modeling_gpt_oss import repeat_kv


def eager_f32_shift(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """gpt-oss's eager_attention_forward with the logits and their shift by the max in float32."""
    key_states = repeat_kv(key, module.num_key_value_groups)
    value_states = repeat_kv(value, module.num_key_value_groups)
    attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    sinks = module.sinks.reshape(1, -1, 1, 1).expand(query.shape[0], -1, query.shape[-2], -1)
    combined = torch.cat([attn_weights, sinks], dim=-1).float()
    combined = combined - combined.max(dim=-1, keepdim=True).values
    probs = F.softmax(combined, dim=-1)[..., :-1].to(value_states.dtype)
    return torch.matmul(probs, value_states).transpose(1, 2).contiguous(), probs
