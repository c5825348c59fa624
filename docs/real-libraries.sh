#!/usr/bin/env bash
# The README's "Real libraries" table: every command as printed there (needs the `real` extra:
# pip install -e ".[real]"). Each prints its verdict table; findings exit 1, so keep going.
set -u
S=torch.nn.functional:scaled_dot_product_attention
HF=transformers.integrations.sdpa_attention:sdpa_attention_forward
TEL="torch.nn:TransformerEncoderLayer(16, 2, 32, 0.0, batch_first=True)"
MHA="torch.nn:MultiheadAttention(16, 2, batch_first=True)"
run() { echo "== xattn-check $*"; xattn-check "$@" --profile ci --seed 0 --quiet | sed -n '3,14p'; }
run "$HF" --kind hf --mask bool
run "$HF" --kind hf --empty-rows finite
run "$HF" --kind hf
run "$HF" --kind hf --mask bool --causal top_left --causal-in-mask --self-attention
run transformers.models.llama.modeling_llama:eager_attention_forward --kind hf --empty-rows finite
run 'xattn_ref.zoo.hf_layers:hf_encoder_layer("bert")' --kind encoder --dim 16
run "$S" --causal top_left --causal-in-mask --self-attention
run "$S" --mask additive --bias --scale
run "$S" --heads gqa --call 'q, k, v, attn_mask=mask, enable_gqa=True'
run "$S" --mask none --causal top_left
run "$TEL" --kind encoder --dim 16 --call 'x, src_key_padding_mask=~mask'
run "$TEL" --kind encoder --dim 16 --call 'x, src_key_padding_mask=~mask' --forward-only
run "$MHA" --kind encoder --dim 16 --call 'x, x, x, key_padding_mask=~mask, need_weights=False'
run "$MHA" --kind encoder --dim 16 --call 'x, x, x, key_padding_mask=~mask' --forward-only
run "$MHA" --kind layer --dim 16 --call 'x, context, context, key_padding_mask=~context_mask'
run "$MHA" --kind layer --dim 16 --call 'x, context, context, key_padding_mask=~context_mask, need_weights=False'
run 'x_transformers.attend:Attend()' --call 'q, k, v, mask=four_d(mask)'
run 'x_transformers.attend:Attend(flash=True)' --call 'q, k, v, mask=four_d(mask)'
run xattn_ref.zoo.adapters:flex_attention_kernel --forward-only --dtype float32 --max-examples 10
run xattn_ref.zoo.adapters:flex_paged_kernel --kind paged --max-examples 10
run xattn_ref.zoo.adapters:flex_paged_kernel --kind paged --poison none --max-examples 10
run 'xattn_ref.zoo.hf_layers:hf_encoder_layer("roberta")' --kind encoder --dim 16
run 'xattn_ref.zoo.hf_layers:hf_encoder_layer("electra", attn_implementation="eager")' --kind encoder --dim 16 --dtype float16
run 'xattn_ref.zoo.hf_layers:hf_decoder_layer("qwen2", attn_implementation="eager")' --kind encoder --dim 16
run 'xattn_ref.zoo.hf_layers:hf_cross_attention("whisper")' --kind layer --dim 16
run 'xattn_ref.zoo.hf_layers:hf_cross_attention("t5")' --kind layer --dim 16 --empty-rows finite
run 'x_transformers:Attention(dim=16, heads=2)' --kind encoder --dim 16 --call 'x, mask=mask' --dtype float16
run transformers.models.gemma2.modeling_gemma2:eager_attention_forward --kind hf --softcap --empty-rows finite
run transformers.models.gemma2.modeling_gemma2:eager_attention_forward --kind hf --softcap --window --empty-rows finite
run transformers.models.mistral.modeling_mistral:eager_attention_forward --kind hf --window --empty-rows finite
run "$HF" --kind hf --mask bool --window
run transformers.models.gpt_oss.modeling_gpt_oss:eager_attention_forward --kind hf --sinks --empty-rows finite
run examples/real/gpt_oss_f32_shift.py:eager_f32_shift --kind hf --sinks --empty-rows finite
run transformers.integrations.eager_paged:eager_paged_attention_forward --kind hf --empty-rows finite
run transformers.integrations.eager_paged:eager_paged_attention_forward --kind hf --sinks --empty-rows finite
run transformers.integrations.sdpa_paged:sdpa_attention_paged_forward --kind hf --mask bool
run xattn_ref.zoo.adapters:flex_window_kernel --window --forward-only --dtype float32 --max-examples 10
