"""Targets for the CLI tests: unusable ones, and a good layer factory."""

import torch

from xattn_ref.adapters import cross_attention_layer

not_callable = 42


def wrong_shape(q, k, v, mask):
    return q[..., :1]


def returns_list(q, k, v, mask):
    return [q]


def raises(q, k, v, mask):
    raise RuntimeError("kernel exploded")


def good_layer():
    return cross_attention_layer(dim=16)


def good_kernel(q, k, v, mask):
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
