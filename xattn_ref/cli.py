"""``xattn-check``: run the property suite against any attention and print a verdict.

    xattn-check TARGET [options]          # TARGET = package.module:name or path/to/file.py:name
    xattn-check                           # the built-in targets and their verdicts
    python -m xattn_ref ...               # the same

Exit status: 0 every property holds; 1 a finding (a property fails, or the target misbehaves on
a drawn case); 2 a usage error, an unusable target (it fails the probe call), or a run that
tested nothing (every requested device or dtype unavailable, every property not applicable).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["build_parser", "main"]

FORMATS = ("text", "json", "junit")
EXIT_HELP = (
    "exit status: 0 every property holds; 1 a property fails or the target misbehaves on a drawn "
    "case; 2 usage error, unusable target, or nothing tested"
)


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    from xattn_ref.kinds import KINDS

    p = argparse.ArgumentParser(
        prog="xattn-check",
        description="Property-based checks of masked attention at the edges "
        "(empty rows, padding, low precision).",
        epilog=EXIT_HELP,
    )
    p.add_argument(
        "target",
        nargs="?",
        help="package.module:name or path/to/file.py:name; name() calls a factory. "
        "Omit to run the built-in targets.",
    )
    p.add_argument(
        "--kind",
        choices=tuple(KINDS),
        default="kernel",
        help="; ".join(f"{k.name}: {k.signature}" for k in KINDS.values()),
    )
    seen: set[str] = set()
    for kind in KINDS.values():
        for option in kind.options:
            if option.name not in seen:
                seen.add(option.name)
                extra: dict[str, Any] = {"nargs": "?", "const": "1"} if option.type == "switch" else {}
                if option.choices:
                    extra["metavar"] = "{" + ",".join(option.choices) + "}"
                p.add_argument(option.flag, dest=option.name, help=f"{option.help} [{kind.name}]", **extra)
    p.add_argument(
        "--dtype", type=_csv, help="comma list from float64,float32,float16,bfloat16 (default all)"
    )
    p.add_argument(
        "--device", type=_csv, help="comma list from cpu,cuda,mps (default all; absent ones are skipped)"
    )
    p.add_argument("--property", type=_csv, dest="properties", help="only these properties (comma list)")
    p.add_argument("--skip", type=_csv, default=[], help="skip these properties (comma list)")
    p.add_argument(
        "--strict", action="store_true", help="also run the opt-in properties (nan_padding_invariance)"
    )
    p.add_argument(
        "--max-examples", help="examples per run (default: the profile's) [env XATTN_MAX_EXAMPLES]"
    )
    p.add_argument("--seed", help="base seed (default random; 0 with the ci profile) [env XATTN_SEED]")
    p.add_argument("--profile", help="dev (default), ci or thorough [env XATTN_PROFILE]")
    p.add_argument(
        "--database", help="directory that keeps failing examples and replays them [env XATTN_DATABASE]"
    )
    p.add_argument("--threads", help="torch intra-op threads (default 1) [env XATTN_THREADS]")
    p.add_argument("--jobs", help="parallel processes (default: the number of cores) [env XATTN_JOBS]")
    p.add_argument(
        "--xfail", help="file of expected failures: 'property[dtype-device]' or 'property', '#' comments"
    )
    p.add_argument("--format", choices=FORMATS, default="text", help="text (default), json or junit")
    p.add_argument("--output", help="write the report here instead of standard output")
    p.add_argument("--quiet", action="store_true", help="no progress on standard error")
    p.add_argument("--list", action="store_true", help="list the kinds and their properties, and exit")
    return p


def _list() -> None:
    from xattn_ref.checks import PROPERTIES
    from xattn_ref.kinds import KINDS

    for kind in KINDS.values():
        print(f"{kind.name}: {kind.signature}")
        for name in kind.properties:
            opt_in = " (opt-in: --strict)" if PROPERTIES[name].opt_in else ""
            print(f"  {name:24s} {PROPERTIES[name].summary}{opt_in}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``xattn-check``; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.list:
        _list()
        return 0
    import torch

    from xattn_ref import plan
    from xattn_ref.config import resolve_config
    from xattn_ref.errors import UsageError
    from xattn_ref.kinds import KINDS
    from xattn_ref.report import Progress, Report, read_xfail
    from xattn_ref.runner import run_tasks

    try:
        config = resolve_config(
            {n: getattr(args, n) for n in ("profile", "seed", "database", "threads", "jobs", "max_examples")}
        )
        torch.set_num_threads(config.threads)
        dtypes, devices = plan.parse_dtypes(args.dtype), plan.parse_devices(args.device)
        if args.output and not os.path.isdir(os.path.dirname(os.path.abspath(args.output))):
            raise UsageError(f"--output: the folder of {args.output!r} does not exist")
        xfail = read_xfail(args.xfail) if args.xfail else {}
        expected = None
        if args.target is None:
            targets, expected = plan.builtin_targets()
        else:
            given = {o.name: getattr(args, o.name) for k in KINDS.values() for o in k.options}
            targets = [plan.load(args.target, args.kind, given)]
        properties = {
            t.name: plan.select_properties(t.kind, args.properties, args.skip, strict=args.strict)
            for t in targets
        }
        for target in targets:
            plan.probe(target, dtypes, devices)
    except UsageError as exc:
        print(f"xattn-check: error: {exc}", file=sys.stderr)
        return 2

    tasks = plan.tasks(targets, properties, dtypes, devices)
    quiet = args.quiet
    progress = None if quiet else Progress(len(tasks))
    start = time.perf_counter()
    results = run_tasks(
        targets,
        tasks,
        settings=config.settings(),
        seed=config.seed,
        database=config.example_database(),
        jobs=config.jobs,
        threads=config.threads,
        on_result=None if progress is None else progress.done,
    )
    elapsed = time.perf_counter() - start
    notes = plan.notes(dtypes, devices, builtins=args.target is None)
    report = Report(targets, results, config, xfail, elapsed, expected, notes)
    text = {"text": report.text, "json": report.json, "junit": report.junit}[args.format]()
    for entry in report.unused_xfail():
        print(f"xattn-check: warning: xfail entry {entry!r} matches no result", file=sys.stderr)
    status = report.exit_status()
    if args.output:
        with open(args.output, "w", encoding="utf-8") as file:
            file.write(text + "\n")
        print(f"xattn-check: {['ok', 'FAILED', 'NOTHING TESTED'][status]}; report written to {args.output}")
    else:
        print(text)
    if status == 2:
        print(f"xattn-check: error: {report.nothing_tested()}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
