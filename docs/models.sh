#!/usr/bin/env bash
# docs/models.md's table: every command as printed there (needs the `real` extra:
# pip install -e ".[real]"). Each prints its verdict table; findings exit 1, so keep going.
set -u
Z=xattn_ref.zoo
run() { echo "== xattn-check $*"; xattn-check "$@" --profile ci --seed 0 --quiet | sed -n '3,16p'; }
run "$Z.tiny_models:TinyLM()" --kind model --vocab 32
run "$Z.tiny_models:TinySeq2Seq()" --kind model --vocab 32 --arch seq2seq
run "$Z.hf_models:causal_lm(\"llama\")" --kind model
run "$Z.hf_models:causal_lm(\"llama\", attn_implementation=\"eager\")" --kind model
run "$Z.hf_models:causal_lm(\"qwen2\")" --kind model
run "$Z.hf_models:causal_lm(\"qwen3\")" --kind model
run "$Z.hf_models:causal_lm(\"gpt_oss\")" --kind model
run "$Z.hf_models:causal_lm(\"gemma2\")" --kind model
run "$Z.hf_models:causal_lm(\"mistral\")" --kind model --max-length 8
run "$Z.hf_models:causal_lm(\"gpt2\")" --kind model
run "$Z.hf_models:causal_lm(\"gpt2\")" --kind model --positions model
run "$Z.hf_models:encoder(\"bert\")" --kind model
run "$Z.hf_models:encoder(\"bert\")" --kind model --padding-side right
run "$Z.hf_models:encoder(\"roberta\")" --kind model --padding-side right
run "$Z.hf_models:seq2seq(\"bart\")" --kind model --padding-side right
run "$Z.hf_models:seq2seq(\"bart\", attn_implementation=\"eager\")" --kind model --padding-side right
run "$Z.hf_models:seq2seq(\"t5\")" --kind model
run "$Z.x_models:x_lm()" --kind model --vocab 64 --padding-side right
run "$Z.x_models:x_lm(rotary=True)" --kind model --vocab 64
run "$Z.x_models:x_seq2seq()" --kind model --vocab 64 --arch seq2seq --padding-side right
