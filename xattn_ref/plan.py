"""What to run, resolved once for both front ends: the targets (given or built in), the
properties that apply to each target's kind, the dtypes and devices, and the probe call that
tells an unusable target before the run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from xattn_ref._devices import ALL_DEVICES, ALL_DTYPES, dtype_name, parse_dtype, unavailable_reason
from xattn_ref.errors import Inexpressible, NotTaken, TargetError, TargetLoadError, UsageError
from xattn_ref.kinds import KINDS, check_property_names, resolve_options
from xattn_ref.runner import Task
from xattn_ref.targets import Target, load_target

__all__ = [
    "builtin_targets",
    "load",
    "notes",
    "parse_devices",
    "parse_dtypes",
    "probe",
    "select_properties",
    "tasks",
]


def parse_dtypes(names: Sequence[str] | None, source: str = "--dtype") -> list[torch.dtype]:
    if not names:
        return list(ALL_DTYPES)
    try:
        return [parse_dtype(n) for n in names]
    except ValueError as exc:
        raise UsageError(f"{source}: {exc}") from None


def parse_devices(names: Sequence[str] | None, source: str = "--device") -> list[str]:
    if not names:
        return list(ALL_DEVICES)
    for name in names:
        if name not in ALL_DEVICES:
            raise UsageError(f"{source}: unknown device {name!r}; expected one of {', '.join(ALL_DEVICES)}")
    return list(names)


def load(spec: str, kind: str, given: dict[str, Any], *, flag_prefix: str = "--", source: str = "") -> Target:
    """Load one target; :class:`UsageError` (one line) when it cannot be."""
    if kind not in KINDS:
        raise UsageError(f"{flag_prefix}kind: unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    options = resolve_options(kind, given, flag_prefix)
    try:
        return load_target(spec, kind, options)
    except TargetLoadError as exc:
        raise UsageError(f"{source}{exc}") from None


def builtin_targets() -> tuple[list[Target], dict[str, bool]]:
    """The built-in targets and whether each should pass."""
    from xattn_ref.zoo.builtins import BUILTINS

    present = [b for b in BUILTINS if b.missing() is None]
    targets = [b.load() for b in present]
    return targets, {t.name: b.should_pass for t, b in zip(targets, present)}


def select_properties(
    kind: str,
    only: Sequence[str] | None,
    skip: Sequence[str] | None,
    prefix: str = "--",
    *,
    strict: bool = False,
) -> list[str]:
    """The kind's properties, restricted to ``only`` and without ``skip`` (names checked);
    opt-in properties only with ``strict`` or when named in ``only``."""
    from xattn_ref.checks import PROPERTIES

    check_property_names(only, skip, prefix)
    names = [p for p in KINDS[kind].properties if (p in only if only else strict or not PROPERTIES[p].opt_in)]
    return [p for p in names if p not in (skip or [])]


def tasks(
    targets: Sequence[Target],
    properties: dict[str, list[str]],
    dtypes: Sequence[torch.dtype],
    devices: Sequence[str],
) -> list[Task]:
    """Every target × property × device × dtype, in report order."""
    return [
        Task(i, prop, dtype, device)
        for i, target in enumerate(targets)
        for prop in properties[target.name]
        for device in devices
        for dtype in dtypes
    ]


def probe(target: Target, dtypes: Sequence[torch.dtype], devices: Sequence[str]) -> str | None:
    """Call the target once on a plain valid case, on the first requested device and dtype that
    is available here and that the target takes (it may raise :class:`NotTaken` for a dtype or
    device outside its limits). Returns where it ran (None if nowhere); raises
    :class:`UsageError` when the target is unusable there."""
    no_float64: TargetError | None = None
    for device in devices:
        for dtype in dtypes:
            if unavailable_reason(device, dtype) is None:
                try:
                    case = KINDS[target.kind].probe(target.options, dtype, device)
                    target.call(case)
                except Inexpressible as exc:
                    raise UsageError(f"these options do not go together: {exc}") from None
                except NotTaken:
                    continue
                except TargetError as exc:
                    # float64 is the reference precision, not one a target must run in (a grouped
                    # matmul that takes no float64): its runs are skipped if another dtype runs
                    if dtype == torch.float64 and len(dtypes) > 1 and no_float64 is None:
                        no_float64 = exc
                        continue
                    raise UsageError(
                        f"unusable target {target.name} (probed on {dtype_name(dtype)}, {device}): {exc}"
                    ) from None
                if no_float64 is not None:
                    why = str(no_float64).splitlines()[0].split(" (on ")[0]
                    target.unusable[dtype_name(torch.float64)] = f"the target does not run in float64: {why}"
                return f"{dtype_name(dtype)}/{device}"
    if no_float64 is not None:
        raise UsageError(f"unusable target {target.name} (probed on float64): {no_float64}")
    return None


def notes(
    dtypes: Sequence[torch.dtype], devices: Sequence[str], *, builtins: bool = False
) -> tuple[str, ...]:
    """What the report header should say: TF32 float32 matmuls on CUDA (the budgets), and with
    ``builtins``, the built-in targets skipped for a missing optional dependency."""
    from xattn_ref.tolerance import matmul_eps
    from xattn_ref.zoo.builtins import BUILTINS

    skipped = [m for m in (b.missing() for b in BUILTINS) if m] if builtins else []
    if torch.float32 not in dtypes:
        return tuple(skipped)
    found = (matmul_eps(torch.float32, d)[1] for d in devices if unavailable_reason(d) is None)
    return tuple(dict.fromkeys(n for n in found if n)) + tuple(skipped)
