"""SDPA targets and layers in a program that runs float32 matmuls in TF32, as many training
scripts set it (``torch.set_float32_matmul_precision("high")``): the gate's float32 budgets then
use TF32's rounding (kernels' and layers'), and the report header says so. Used by
``scripts/cuda_matrix.py``."""

from __future__ import annotations

import torch

from xattn_ref.zoo.adapters import cross_attention_layer, decoder_layer, sdpa

__all__ = ["cross_attention_layer", "decoder_layer", "sdpa_efficient", "sdpa_math"]

torch.set_float32_matmul_precision("high")

sdpa_math = sdpa("math")
sdpa_efficient = sdpa("efficient")
