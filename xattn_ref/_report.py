"""Words for results: failure reports and the command that reproduces a failure."""

from __future__ import annotations

import shlex
from typing import Any

from xattn_ref.runner import Result

__all__ = ["failure_report", "read_xfail", "reproduce_command", "target_args"]


def target_args(target: Any) -> tuple[str, ...]:
    """The ``xattn-check`` options that say a target's kind (and a layer's dims)."""
    if target.kind != "layer":
        return ()
    e, e_ctx = target.dims
    return ("--kind", "layer", "--dim", str(e), "--context-dim", str(e_ctx))


def reproduce_command(target: str, result: Result, *, profile: str, extra: tuple[str, ...] = ()) -> str:
    """The ``xattn-check`` command that runs exactly this property, dtype and device again."""
    parts = [
        "xattn-check",
        target,
        *extra,
        "--property",
        result.property,
        "--dtype",
        result.dtype,
        "--device",
        result.device,
        "--profile",
        profile,
    ]
    if result.seed is not None and profile != "ci":  # the ci profile is derandomized
        parts += ["--seed", str(result.seed)]
    return shlex.join(parts)


def failure_report(target: str, result: Result, *, profile: str, extra: tuple[str, ...] = ()) -> str:
    """A failure in words: what broke, on which minimal example, and how to reproduce it."""
    lines = [
        f"{result.property} {result.status} for {target} [{result.dtype}, {result.device}] "
        f"after {result.examples} examples"
    ]
    lines.append(f"  {result.message}")
    if result.case is not None:
        lines.append(f"  minimal example: {result.case.describe()}")
        lines.append("  rebuild it in Python:")
        lines.extend("    " + line for line in result.case.snippet().splitlines())
    lines.append(f"  reproduce: {reproduce_command(target, result, profile=profile, extra=extra)}")
    return "\n".join(lines)


def read_xfail(path: str) -> dict[str, str]:
    """An xfail file: one id per line (``property``, ``property[dtype-device]`` or part of a
    pytest id), ``#`` starts a comment, which becomes the reason. Raises ``OSError``."""
    with open(path, encoding="utf-8") as file:
        lines = file.read().splitlines()
    entries: dict[str, str] = {}
    for line in lines:
        entry, _, comment = line.partition("#")
        if entry.strip():
            entries[entry.strip()] = comment.strip() or f"listed in {path}"
    return entries
