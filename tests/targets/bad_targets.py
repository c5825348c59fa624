"""Targets for the CLI tests: unusable ones, and a good layer factory."""

import torch

from xattn_ref.zoo.adapters import cross_attention_layer

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


def half_only(q, k, v, mask):
    """An inference kernel that only takes float16 (raises otherwise)."""
    if q.dtype != torch.float16:
        raise TypeError(f"half_only takes float16, got {q.dtype}")
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def device_only(q, k, v, mask):
    """A kernel for one device (named by $XATTN_TEST_DEVICE): raises on any other."""
    import os

    required = os.environ["XATTN_TEST_DEVICE"]
    if q.device.type != required:
        raise RuntimeError(f"device_only runs on {required} only, got {q.device}")
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def detached_when_all_padding(q, k, v, mask):
    """Correct: a fast path for a fully padded batch that returns a fresh zeros tensor, with no
    graph; its gradient is zero, which is right."""
    if mask is not None and not bool(mask.any()):
        return torch.zeros(*q.shape[:3], v.shape[-1], dtype=q.dtype, device=q.device)
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def detached_for_one_key(q, k, v, mask):
    """A fast path for a single key that detaches its output: no gradient where there is one."""
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.detach() if k.shape[2] == 1 else out


def wrong_for_long_contexts(q, k, v, mask):
    """Correct, except that contexts of 100 keys or more attend to their first key only."""
    if k.shape[2] >= 100:
        k, v, mask = k[:, :, :1], v[:, :, :1], None if mask is None else mask[..., :1]
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def layer_in_every_dtype(dtype, device):
    """The docs' pattern: a factory that takes dtype and device, and wraps the layer in a lambda."""
    layer = cross_attention_layer(dim=16).to(dtype=dtype, device=device).eval()
    return lambda x, context, context_mask: layer(x, context, context_mask)


def padding_mask_kernel(q, k, v, padding):
    """Correct for its own convention: ``padding`` True = a padded key (not the gate's)."""
    return torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=None if padding is None else ~padding
    )


def mask_required_kernel(q, k, v, mask):
    """Correct, but written to take a mask every time (``~~mask`` fails on None)."""
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=~~mask)


def zeros_for_one_key(q, k, v, mask):
    """A fast path for a single key that returns fresh zeros (no graph) whatever the key says."""
    if k.shape[2] == 1:
        return torch.zeros(*q.shape[:3], v.shape[-1], dtype=q.dtype, device=q.device)
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def cuda_only(q, k, v, mask):
    """Raises as a CUDA-only operator does on the CPU: a message of many lines."""
    backends = "\n".join(f"{name}: registered at somewhere.cpp" for name in ("CPU", "CUDA", "Meta"))
    raise NotImplementedError(f"Could not run 'aten::_flash_attention' from the 'CPU' backend.\n{backends}")
