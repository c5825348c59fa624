"""``xattn-check``: run the property suite against any attention and print a verdict.

    xattn-check TARGET [options]          # TARGET = package.module:name or path/to/file.py:name
    xattn-check                           # the built-in targets and their verdicts
    python -m xattn_ref ...               # the same

Exit status: 0 every property holds, 1 a property fails, 2 a usage error or an unusable target.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["main"]

FORMATS = ("text", "json", "junit")


class UsageError(Exception):
    """Bad options or an unusable target: exit 2 with this one-line message."""


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="xattn-check",
        description="Property-based checks of masked attention at the edges "
        "(empty rows, padding, low precision).",
        epilog="Exit status: 0 all properties hold, 1 a property fails, 2 usage error or unusable target.",
    )
    p.add_argument(
        "target",
        nargs="?",
        help="package.module:name or path/to/file.py:name; name() calls a factory. "
        "Omit to run the built-in targets.",
    )
    p.add_argument(
        "--kind",
        choices=("kernel", "layer"),
        default="kernel",
        help="kernel: fn(q, k, v, mask) with mask True = may attend (default); "
        "layer: fn(x, context, context_mask) with context_mask True = real token",
    )
    p.add_argument("--dim", type=int, help="E, the model dim of a layer target (required with --kind layer)")
    p.add_argument("--context-dim", type=int, help="E_ctx of a layer target (default E)")
    p.add_argument(
        "--dtype", type=_csv, help="comma list from float64,float32,float16,bfloat16 (default all)"
    )
    p.add_argument(
        "--device", type=_csv, help="comma list from cpu,cuda,mps (default all; absent ones are skipped)"
    )
    p.add_argument("--property", type=_csv, dest="properties", help="only these properties (comma list)")
    p.add_argument("--skip", type=_csv, default=[], help="skip these properties (comma list)")
    p.add_argument(
        "--max-examples", type=int, help="examples per property, dtype and device (default: the profile's)"
    )
    p.add_argument(
        "--seed", type=int, help="Hypothesis seed (default random; the ci profile is derandomized)"
    )
    p.add_argument("--profile", help="dev (default), ci or thorough [env XATTN_PROFILE]")
    p.add_argument("--database", help="directory for Hypothesis's example database [env XATTN_DATABASE]")
    p.add_argument(
        "--xfail", help="file of expected failures: 'property[dtype-device]' or 'property', '#' comments"
    )
    p.add_argument("--format", choices=FORMATS, default="text", help="text (default), json or junit")
    p.add_argument("--output", help="write the report here instead of standard output")
    p.add_argument("--list", action="store_true", help="list the properties and exit")
    return p


@dataclass
class Plan:
    """What to run: targets, properties, dtypes, devices, settings."""

    targets: list[Any]
    properties: dict[str, list[str]]
    dtypes: list[Any]
    devices: list[str]
    profile: str
    seed: int | None
    settings: Any
    xfail: dict[str, str] = field(default_factory=dict)
    expected: dict[str, bool] = field(default_factory=dict)  # built-in mode: target -> should pass


def _plan(args: argparse.Namespace) -> Plan:
    from xattn_ref._devices import ALL_DEVICES, ALL_DTYPES, parse_dtype
    from xattn_ref.profiles import profile_settings, resolve_profile
    from xattn_ref.runner import properties_for
    from xattn_ref.targets import TargetLoadError, load_target

    try:
        profile = resolve_profile(args.profile)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        dtypes = [parse_dtype(d) for d in args.dtype] if args.dtype else list(ALL_DTYPES)
    except ValueError as exc:
        raise UsageError(f"--dtype: {exc}") from None
    devices = args.device or list(ALL_DEVICES)
    for d in devices:
        if d not in ALL_DEVICES:
            raise UsageError(f"--device: unknown device {d!r}; expected one of {', '.join(ALL_DEVICES)}")
    if args.max_examples is not None and args.max_examples < 1:
        raise UsageError(f"--max-examples must be at least 1, got {args.max_examples}")
    overrides: dict[str, Any] = {}
    if args.max_examples is not None:
        overrides["max_examples"] = args.max_examples
    database = args.database or os.environ.get("XATTN_DATABASE")
    if database and profile != "ci":
        from hypothesis.database import DirectoryBasedExampleDatabase

        overrides["database"] = DirectoryBasedExampleDatabase(database)
    settings = profile_settings(profile, **overrides)
    seed = None if profile == "ci" else (args.seed if args.seed is not None else random.randrange(2**32))

    dims: tuple[int, int] | None = None
    expected: dict[str, bool] = {}
    if args.target is None:
        targets, expected = _builtin_targets()
    else:
        if args.kind == "layer":
            if args.dim is None:
                raise UsageError("--dim E is required with --kind layer")
            if args.dim < 1 or (args.context_dim is not None and args.context_dim < 1):
                raise UsageError("--dim and --context-dim must be at least 1")
            dims = (args.dim, args.context_dim or args.dim)
        try:
            targets = [load_target(args.target, args.kind, dims)]
        except TargetLoadError as exc:
            raise UsageError(str(exc)) from None

    properties: dict[str, list[str]] = {}
    for t in targets:
        names = list(properties_for(t.kind))
        for option, chosen in (("--property", args.properties), ("--skip", args.skip)):
            for name in chosen or []:
                known = set(properties_for("kernel")) | set(properties_for("layer"))
                if name not in known:
                    raise UsageError(
                        f"{option}: unknown property {name!r}; expected one of {', '.join(sorted(known))}"
                    )
        if args.properties:
            names = [n for n in names if n in args.properties]
        names = [n for n in names if n not in args.skip]
        properties[t.name] = names
    xfail = _read_xfail(args.xfail) if args.xfail else {}
    return Plan(targets, properties, dtypes, devices, profile, seed, settings, xfail, expected)


def _builtin_targets() -> tuple[list[Any], dict[str, bool]]:
    from xattn_ref.adapters import multihead_attention_layer
    from xattn_ref.known_bad import neg_inf_softmax
    from xattn_ref.targets import BUILTIN_KERNELS, Target, as_layer

    dims = (16, 16)
    targets = [Target(name, fn) for name, fn in BUILTIN_KERNELS.items()]
    targets.append(Target("plain -inf softmax", neg_inf_softmax))
    targets.append(
        as_layer("nn.MultiheadAttention (need_weights default)", multihead_attention_layer(16, 2), dims)
    )
    targets.append(
        as_layer(
            "nn.MultiheadAttention (need_weights=False)",
            multihead_attention_layer(16, 2, need_weights=False),
            dims,
        )
    )
    expected = {
        t.name: t.name not in ("plain -inf softmax", "nn.MultiheadAttention (need_weights default)")
        for t in targets
    }
    return targets, expected


def _read_xfail(path: str) -> dict[str, str]:
    from xattn_ref._report import read_xfail

    try:
        return read_xfail(path)
    except OSError as exc:
        raise UsageError(f"--xfail: cannot read {path!r}: {exc.strerror}") from None


def _probe(target: Any) -> None:
    """Call the target once on a plain valid input; UsageError if it is unusable."""
    import torch

    from xattn_ref._calls import TargetError, call_kernel
    from xattn_ref.strategies import CaseSpec, MaskSpec, SlicePattern

    try:
        if target.kind == "layer":
            from xattn_ref.layers import LayerCaseSpec

            e, e_ctx = target.dims
            mask = MaskSpec("key_padding", (SlicePattern("all_true"), SlicePattern("right_padding", 3)))
            case = LayerCaseSpec(
                2, 3, 5, e, e_ctx, torch.float32, "cpu", 0, (1.0, 1.0), (1.0, 1.0), mask
            ).build()
            target.fn(case)
        else:
            mask = MaskSpec("key_padding", (SlicePattern("all_true"), SlicePattern("right_padding", 3)))
            kcase = CaseSpec(2, 2, 3, 5, 8, 8, torch.float32, "cpu", 0, (1.0, 1.0), (1.0, 1.0), mask).build()
            call_kernel(target.fn, kcase)
    except TargetError as exc:
        raise UsageError(f"unusable target {target.name}: {exc}") from None


def _xfail_reason(plan: Plan, result: Any) -> str | None:
    for key in (f"{result.property}[{result.dtype}-{result.device}]", result.property):
        if key in plan.xfail:
            return plan.xfail[key]
    return None


def _run(plan: Plan, progress: bool) -> list[tuple[Any, Any, str | None]]:
    from xattn_ref.runner import run_target

    out = []
    for target in plan.targets:
        for prop in plan.properties[target.name]:
            for device in plan.devices:
                for dtype in plan.dtypes:
                    r = run_target(
                        target,
                        prop,
                        dtype=dtype,
                        device=device,
                        settings=plan.settings,
                        seed=plan.seed,
                    )
                    out.append((target, r, _xfail_reason(plan, r)))
                    if progress:
                        print(".", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return out


CELL = {"passed": "pass", "failed": "FAIL", "skipped": "skip", "error": "ERROR"}


def _text(plan: Plan, results: list[tuple[Any, Any, str | None]], elapsed: float) -> str:
    from xattn_ref._report import failure_report, target_args

    lines: list[str] = []
    seed = "derandomized" if plan.seed is None else f"seed {plan.seed}"
    for target in plan.targets:
        mine = [(r, x) for t, r, x in results if t is target]
        columns = list(dict.fromkeys(f"{r.dtype}/{r.device}" for r, _ in mine if r.status != "skipped"))
        lines.append(f"{target.name} ({target.kind}) — profile {plan.profile}, {seed}")
        width = max([len(p) for p in plan.properties[target.name]] + [8])
        lines.append(" " * (width + 2) + "  ".join(f"{c:>14}" for c in columns))
        for prop in plan.properties[target.name]:
            cells = []
            for col in columns:
                dt, d = col.split("/")
                r, x = next((r, x) for r, x in mine if r.property == prop and r.dtype == dt and r.device == d)
                cell = "xfail" if (x and r.status == "failed") else CELL[r.status]
                cells.append(f"{cell:>14}")
            lines.append(f"  {prop:<{width}}" + "  ".join(cells))
        skipped = dict.fromkeys(r.message for r, _ in mine if r.status == "skipped")
        for reason in skipped:
            lines.append(f"  skipped: {reason}")
        bad = [r for r, x in mine if r.status in ("failed", "error") and not x]
        verdict = "all properties hold" if not bad else f"{len(bad)} failing"
        if plan.expected:
            ok = (not bad) == plan.expected[target.name]
            verdict += " (as expected)" if ok else " (NOT as expected)"
        lines.append(f"  verdict: {verdict}")
        lines.append("")
    shown: set[tuple[str, str]] = set()
    for target, r, x in results:
        if r.status in ("failed", "error") and not x and (target.name, r.property) not in shown:
            shown.add((target.name, r.property))  # one report per property; the matrix shows the rest
            lines.append(failure_report(target.name, r, profile=plan.profile, extra=target_args(target)))
            lines.append("")
    total = sum(r.examples for _, r, _ in results)
    lines.append(f"{total} examples in {elapsed:.1f} s")
    return "\n".join(lines)


def _json(plan: Plan, results: list[tuple[Any, Any, str | None]], ok: bool) -> str:
    from xattn_ref._report import reproduce_command, target_args

    return json.dumps(
        {
            "ok": ok,
            "profile": plan.profile,
            "seed": plan.seed,
            "results": [
                {
                    "target": t.name,
                    "kind": t.kind,
                    "property": r.property,
                    "dtype": r.dtype,
                    "device": r.device,
                    "status": r.status,
                    "expected_failure": bool(x),
                    "examples": r.examples,
                    "message": r.message,
                    "case": None if r.case is None else r.case.describe(),
                    "reproduce": ""
                    if r.status in ("passed", "skipped")
                    else reproduce_command(t.name, r, profile=plan.profile, extra=target_args(t)),
                }
                for t, r, x in results
            ],
        },
        indent=2,
    )


def _junit(plan: Plan, results: list[tuple[Any, Any, str | None]], elapsed: float) -> str:
    from xattn_ref._report import failure_report, target_args

    suite = ET.Element(
        "testsuite",
        name="xattn_ref",
        tests=str(len(results)),
        time=f"{elapsed:.3f}",
        failures=str(sum(r.status == "failed" and not x for _, r, x in results)),
        errors=str(sum(r.status == "error" for _, r, _ in results)),
        skipped=str(sum(r.status == "skipped" or bool(x) for _, r, x in results)),
    )
    for t, r, x in results:
        case = ET.SubElement(suite, "testcase", classname=t.name, name=f"{r.property}[{r.dtype}-{r.device}]")
        if r.status == "skipped":
            ET.SubElement(case, "skipped", message=r.message)
        elif x and r.status == "failed":
            ET.SubElement(case, "skipped", message=f"xfail: {x}")
        elif r.status in ("failed", "error"):
            node = ET.SubElement(case, "failure" if r.status == "failed" else "error", message=r.message)
            node.text = failure_report(t.name, r, profile=plan.profile, extra=target_args(t))
    return ET.tostring(suite, encoding="unicode")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``xattn-check``; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.list:
        from xattn_ref.runner import properties_for

        for kind in ("kernel", "layer"):
            print(f"{kind} properties:")
            for name, prop in properties_for(kind).items():
                print(f"  {name:24s} {prop.summary}")
        return 0
    try:
        plan = _plan(args)
        for target in plan.targets:
            _probe(target)
    except UsageError as exc:
        print(f"xattn-check: error: {exc}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    results = _run(plan, progress=args.format == "text" and sys.stderr.isatty())
    elapsed = time.perf_counter() - start
    for entry in plan.xfail:
        if not any(entry in (r.property, f"{r.property}[{r.dtype}-{r.device}]") for _, r, _ in results):
            print(f"xattn-check: warning: xfail entry {entry!r} matches no result", file=sys.stderr)
    failing = [r for t, r, x in results if r.status == "failed" and not x]
    errors = [r for _, r, _ in results if r.status == "error"]
    if plan.expected:
        ok = all(
            (not any(r.status in ("failed", "error") for t2, r, _ in results if t2 is t))
            == plan.expected[t.name]
            for t in plan.targets
        )
    else:
        ok = not failing and not errors
    report = {
        "text": lambda: _text(plan, results, elapsed),
        "json": lambda: _json(plan, results, ok),
        "junit": lambda: _junit(plan, results, elapsed),
    }[args.format]()
    if args.output:
        with open(args.output, "w", encoding="utf-8") as file:
            file.write(report + "\n")
        print(f"xattn-check: {'ok' if ok else 'FAILED'}; report written to {args.output}")
    else:
        print(report)
    if errors and not plan.expected:
        first = errors[0]
        print(f"xattn-check: error: unusable target: {first.message}", file=sys.stderr)
        return 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
