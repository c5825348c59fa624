"""Which devices and dtypes can run here, and why the others cannot."""

from __future__ import annotations

import torch

__all__ = [
    "ALL_DEVICES",
    "ALL_DTYPES",
    "LOW_PRECISION_DTYPES",
    "dtype_name",
    "parse_dtype",
    "unavailable_reason",
]

ALL_DTYPES: tuple[torch.dtype, ...] = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
LOW_PRECISION_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float16, torch.bfloat16)
ALL_DEVICES: tuple[str, ...] = ("cpu", "cuda", "mps")

_NAMES = {
    "float64": torch.float64,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float16`` -> ``'float16'``."""
    return str(dtype).removeprefix("torch.")


def parse_dtype(name: str) -> torch.dtype:
    """``'float16'`` (or ``'torch.float16'``) -> ``torch.float16``; ValueError naming the choices."""
    key = name.strip().removeprefix("torch.")
    if key not in _NAMES:
        raise ValueError(f"unknown dtype {name!r}; expected one of {', '.join(_NAMES)}")
    return _NAMES[key]


def unavailable_reason(device: str, dtype: torch.dtype | None = None) -> str | None:
    """None when ``device`` (and ``dtype`` on it) can run here; otherwise why not, in one line."""
    kind = torch.device(device).type
    if kind == "cuda" and not torch.cuda.is_available():
        built = "without CUDA" if torch.version.cuda is None else f"with CUDA {torch.version.cuda}"
        return f"cuda: no CUDA device available (torch {torch.__version__}, built {built})"
    if kind == "mps" and not torch.backends.mps.is_available():
        return f"mps: no MPS device available (torch {torch.__version__}; MPS needs Apple silicon)"
    if kind not in ALL_DEVICES:
        return f"{device}: not a device this suite knows how to test (expected one of {ALL_DEVICES})"
    if kind == "mps" and dtype == torch.float64:
        return "mps: float64 is not supported on MPS"
    return None
