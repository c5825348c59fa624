"""xattn_ref: property-based numerical verification of masked attention at the edges (rows with
no allowed key, padding, low precision).

What a user needs, from one import::

    import xattn_ref as xr
    from hypothesis import given

    @given(xr.attention_cases(max_kv_len=32))
    def test_my_kernel(case):  # case.mask: True = may attend
        xr.check("reference_agreement", xr.kernel_call(my_kernel), case)

- strategies: :func:`attention_cases` (kernels), :func:`layer_cases`, :func:`encoder_cases`
  (layers), :func:`model_cases` (token batches for models), :func:`masks`;
- cases: :class:`AttentionCase`, :class:`LayerCase`, :class:`EncoderCase`, :class:`ModelCase`, and the
  :class:`Dialect` a kernel speaks (its mask, heads, causality, empty-row policy);
- checks: :func:`check` runs one property on one case, :data:`PROPERTIES` lists them,
  :func:`kernel_call` / :func:`layer_call` bind your callable; :func:`run_property` runs a
  property with Hypothesis (shrinking, a verdict) on a target from :func:`as_target`;
- the guarded reference :func:`attention`, and the :func:`guard` / :func:`safe_sdpa` that fix
  what the checks find;
- errors: :class:`PropertyFailure`, :class:`TargetError`, :class:`NotTaken`,
  :class:`Inexpressible`, :class:`UsageError`.

Names load on first use: ``import xattn_ref`` imports neither torch nor Hypothesis.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "PROPERTIES",
    "AttentionCase",
    "Dialect",
    "EncoderCase",
    "Inexpressible",
    "LayerCase",
    "ModelCase",
    "NotTaken",
    "PropertyFailure",
    "TargetError",
    "UsageError",
    "as_target",
    "attention",
    "attention_cases",
    "check",
    "encoder_cases",
    "guard",
    "kernel_call",
    "layer_call",
    "layer_cases",
    "masks",
    "model_cases",
    "run_property",
    "safe_sdpa",
]

#: public name -> the module it lives in
_WHERE = {
    "PROPERTIES": "xattn_ref.checks",
    "check": "xattn_ref.checks",
    "AttentionCase": "xattn_ref.cases",
    "EncoderCase": "xattn_ref.cases",
    "LayerCase": "xattn_ref.cases",
    "ModelCase": "xattn_ref.cases",
    "Dialect": "xattn_ref.dialects",
    "Inexpressible": "xattn_ref.errors",
    "NotTaken": "xattn_ref.errors",
    "PropertyFailure": "xattn_ref.errors",
    "TargetError": "xattn_ref.errors",
    "UsageError": "xattn_ref.errors",
    "as_target": "xattn_ref.targets",
    "attention": "xattn_ref.reference",
    "attention_cases": "xattn_ref.strategies",
    "encoder_cases": "xattn_ref.strategies",
    "layer_cases": "xattn_ref.strategies",
    "masks": "xattn_ref.strategies",
    "model_cases": "xattn_ref.strategies",
    "guard": "xattn_ref.guard",
    "safe_sdpa": "xattn_ref.guard",
    "kernel_call": "xattn_ref.kinds",
    "layer_call": "xattn_ref.kinds",
    "run_property": "xattn_ref.runner",
}

if TYPE_CHECKING:
    from xattn_ref.cases import AttentionCase, EncoderCase, LayerCase
    from xattn_ref.checks import PROPERTIES, check
    from xattn_ref.dialects import Dialect
    from xattn_ref.errors import Inexpressible, NotTaken, PropertyFailure, TargetError, UsageError
    from xattn_ref.guard import guard, safe_sdpa
    from xattn_ref.kinds import kernel_call, layer_call
    from xattn_ref.reference import attention
    from xattn_ref.runner import run_property
    from xattn_ref.strategies import attention_cases, encoder_cases, layer_cases, masks
    from xattn_ref.targets import as_target


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'xattn_ref' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
