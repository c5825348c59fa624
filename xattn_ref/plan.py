"""What to run, resolved once for both front ends: :func:`build` turns the options (from the
command line, pytest or the environment, checked by :func:`xattn_ref.request.request`) into a
:class:`Plan`: the targets (given or built in) with their kinds, the properties that apply to
each, the dtypes and devices, the settings and the xfail entries, checked once, each target
probed once. ``xattn-check`` runs and reports it; the pytest plugin makes it into tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from xattn_ref._devices import ALL_DEVICES, ALL_DTYPES, dtype_name, parse_dtype, unavailable_reason
from xattn_ref.checks import PROPERTIES
from xattn_ref.config import RunConfig, resolve_config
from xattn_ref.errors import Inexpressible, NotTaken, TargetError, TargetLoadError, UsageError
from xattn_ref.kinds import KINDS, Kind, check_property_names, resolve_options
from xattn_ref.options import DEFAULT_PROFILE
from xattn_ref.report import read_xfail
from xattn_ref.request import Request
from xattn_ref.runner import Task
from xattn_ref.targets import Target, load_target
from xattn_ref.tolerance import matmul_eps

__all__ = [
    "Plan",
    "build",
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
    return _load(spec, kind, resolve_options(kind, given, flag_prefix), source=source)


def _load(spec: str, kind: str, options: dict[str, Any], *, source: str = "") -> Target:
    """Load one target of resolved ``options``; :class:`UsageError` when it cannot be."""
    try:
        return load_target(spec, kind, options)
    except TargetLoadError as exc:
        raise UsageError(f"{source}{exc}") from None


def builtin_targets() -> tuple[list[Target], dict[str, bool], tuple[str, ...]]:
    """The built-in targets, whether each should pass, and why each other one is skipped (a
    missing optional dependency). The machinery's one door to the zoo."""
    from xattn_ref.zoo.builtins import BUILTINS

    present = [b for b in BUILTINS if b.missing() is None]
    targets = [b.load() for b in present]
    skipped = tuple(m for m in (b.missing() for b in BUILTINS) if m)
    return targets, {t.name: b.should_pass for t, b in zip(targets, present)}, skipped


def select_properties(
    kind: Kind,
    only: Sequence[str] | None,
    skip: Sequence[str] | None,
    prefix: str = "--",
    *,
    strict: bool = False,
) -> list[str]:
    """The kind's properties, restricted to ``only`` and without ``skip`` (names checked);
    opt-in properties only with ``strict`` or when named in ``only``."""
    check_property_names(only, skip, prefix)
    names = [p for p in kind.properties if (p in only if only else strict or not PROPERTIES[p].opt_in)]
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
                    case = target.kind.probe(target.options, dtype, device)
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
                        f"unusable target {target.name} (probed on {dtype_name(dtype)}, {device}): "
                        + _one_line(str(exc))
                    ) from None
                if no_float64 is not None:
                    why = str(no_float64).splitlines()[0].split(" (on ")[0]
                    target.unusable[dtype_name(torch.float64)] = f"the target does not run in float64: {why}"
                return f"{dtype_name(dtype)}/{device}"
    if no_float64 is not None:
        raise UsageError(f"unusable target {target.name} (probed on float64): {_one_line(str(no_float64))}")
    return None


def _one_line(message: str) -> str:
    """A target's error in one line: its first line and, when it has more (a dispatcher's list
    of backends), its last, which says on what it was called."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if len(lines) <= 2:
        return " ".join(lines)
    return f"{lines[0]} [... {len(lines) - 2} lines ...] {lines[-1]}"


def notes(
    dtypes: Sequence[torch.dtype], devices: Sequence[str], skipped: Sequence[str] = ()
) -> tuple[str, ...]:
    """What the report header should say: TF32 float32 matmuls on CUDA (the budgets), then
    ``skipped``: the built-in targets skipped for a missing optional dependency."""
    if torch.float32 not in dtypes:
        return tuple(skipped)
    found = (matmul_eps(torch.float32, d)[1] for d in devices if unavailable_reason(d) is None)
    return tuple(dict.fromkeys(n for n in found if n)) + tuple(skipped)


@dataclass
class Plan:
    """A run, resolved: what :func:`build` returns.

    - ``config``: profile, seed, database, threads, jobs;
    - ``targets`` (each holding its :class:`~xattn_ref.kinds.Kind`), and ``expected``: whether
      each built-in should pass (None for a target given);
    - ``properties``: target name -> the properties to run on it;
    - ``dtypes``, ``devices`` (requested), ``present`` (those available here) and ``absent``
      (why each other one is not);
    - ``xfail``: the xfail entries (id -> reason); ``spec``: the targets, in words;
    - ``skipped``: why each built-in that does not run here is skipped.
    """

    config: RunConfig
    targets: list[Target]
    expected: dict[str, bool] | None
    properties: dict[str, list[str]]
    dtypes: list[torch.dtype]
    devices: list[str]
    present: list[str]
    absent: tuple[str, ...]
    xfail: dict[str, str]
    spec: str
    skipped: tuple[str, ...] = ()

    def tasks(self) -> list[Task]:
        """Every target × property × device × dtype that can run here, in report order."""
        return tasks(self.targets, self.properties, self.dtypes, self.present)

    def notes(self) -> tuple[str, ...]:
        return notes(self.dtypes, self.present, self.skipped)


def build(request: Request, *, default_profile: str | None = None) -> Plan:
    """The plan of a run from its checked options (:func:`xattn_ref.request.request`). Without a
    target, the built-in targets run (the ``quick`` profile unless one is named). Raises
    :class:`UsageError` (one line)."""
    values, sources, prefix = request.values, request.sources, request.prefix
    spec, kind = request.target, request.kind
    profile = default_profile or ("quick" if spec is None else DEFAULT_PROFILE)
    config = resolve_config(dict(request.given), flag_prefix=prefix, default_profile=profile)
    torch.set_num_threads(config.threads)
    dtypes = parse_dtypes(values["dtype"], sources["dtype"])
    devices = parse_devices(values["device"], sources["device"])
    present = [d for d in devices if unavailable_reason(d) is None]
    absent = tuple(r for r in (unavailable_reason(d) for d in devices) if r is not None)
    xfail = read_xfail(values["xfail"], sources["xfail"]) if values["xfail"] else {}
    expected: dict[str, bool] | None = None
    skipped: tuple[str, ...] = ()
    if spec is None:
        targets, expected, skipped = builtin_targets()
        described = "the built-in targets"
    else:
        targets = [_load(spec, kind, request.options or {}, source=f"{sources['target']}: ")]
        described = f"{spec} ({kind}: {targets[0].signature})"
    only, skip, strict = values["property"], values["skip"], bool(values["strict"])
    properties = {t.name: select_properties(t.kind, only, skip, prefix, strict=strict) for t in targets}
    for target in targets:
        probe(target, dtypes, present)
    return Plan(
        config=config, targets=targets, expected=expected, properties=properties, dtypes=dtypes,
        devices=devices, present=present, absent=absent, xfail=xfail, spec=described, skipped=skipped,
    )  # fmt: skip
