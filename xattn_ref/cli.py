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
from typing import Any, NoReturn

from xattn_ref.errors import UsageError
from xattn_ref.kinds import KINDS
from xattn_ref.options import RUN_OPTIONS, Option, did_you_mean
from xattn_ref.request import request

__all__ = ["build_parser", "main"]

FORMATS = ("text", "json", "junit")
EXIT_HELP = (
    "exit status: 0 every property holds; 1 a property fails or the target misbehaves on a drawn "
    "case; 2 usage error, unusable target, or nothing tested"
)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the message, a "did you mean" for a misspelled option,
    and where to look; exit status 2."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments: "):
            words = message.removeprefix("unrecognized arguments: ").split()
            flags = [s for a in self._actions for s in a.option_strings]
            message = "unrecognized arguments: " + " ".join(words)
            message += did_you_mean(words[0].split("=")[0], flags) if words[0].startswith("-") else ""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _all_options() -> list[tuple[Option, str]]:
    """Every option once, with the kinds it is for ("" for the run's own)."""
    table: dict[str, tuple[Option, list[str]]] = {o.name: (o, []) for o in RUN_OPTIONS if o.name != "target"}
    for kind in KINDS.values():
        for o in kind.options:
            table.setdefault(o.name, (o, []))[1].append(kind.name)
    return [(o, ",".join(kinds)) for o, kinds in table.values()]


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="xattn-check",
        description="Property-based checks of masked attention at the edges "
        "(empty rows, padding, low precision).",
        epilog=EXIT_HELP,
        allow_abbrev=False,
    )
    p.add_argument(
        "target",
        nargs="?",
        help="package.module:name or path/to/file.py:name; name() calls a factory (quote it in a "
        "shell: 'pkg.mod:build()'). Omit to run the built-in targets.",
    )
    for option, kinds in _all_options():
        extra: dict[str, Any] = {"nargs": "?", "const": "1"} if option.type == "switch" else {}
        if option.name == "kind":
            extra["help"] = "; ".join(f"{k.name}: {k.signature}" for k in KINDS.values())
        if option.choices or option.metavar:
            extra["metavar"] = option.metavar or "{" + ",".join(option.choices) + "}"
        help_ = option.help + (f" [{kinds}]" if kinds else f" [env {option.env}]")
        help_ = help_.replace("%", "%%")  # argparse formats help with %
        p.add_argument(option.flag, dest=option.name, **{"help": help_, **extra})
    p.add_argument("--format", choices=FORMATS, default="text", help="text (default), json or junit")
    p.add_argument("--output", help="write the report here instead of standard output")
    p.add_argument("--quiet", action="store_true", help="no progress on standard error")
    p.add_argument("--list", action="store_true", help="list the kinds and their properties, and exit")
    return p


def _join_negative(argv: Sequence[str], parser: argparse.ArgumentParser) -> list[str]:
    """``--sentinel -1e4`` as ``--sentinel=-1e4``: argparse takes ``-1e4`` for an option, so a
    value that begins with ``-`` and reads as a number is joined to the flag that takes it."""
    takes_value = {
        s for a in parser._actions if a.option_strings and a.nargs is None and a.const is None
        for s in a.option_strings
    }  # fmt: skip
    out: list[str] = []
    for word in argv:
        if out and out[-1] in takes_value and word.startswith("-"):
            try:
                float(word)
            except ValueError:
                pass
            else:
                out[-1] = f"{out[-1]}={word}"
                continue
        out.append(word)
    return out


def _list() -> None:
    from xattn_ref.checks import PROPERTIES

    for kind in KINDS.values():
        print(f"{kind.name}: {kind.signature}")
        for name in kind.properties:
            opt_in = " (opt-in: --strict)" if PROPERTIES[name].opt_in else ""
            print(f"  {name:24s} {PROPERTIES[name].summary}{opt_in}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``xattn-check``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(_join_negative(sys.argv[1:] if argv is None else list(argv), parser))
    if args.list:
        _list()
        return 0
    try:
        if args.output and not os.path.isdir(os.path.dirname(os.path.abspath(args.output))):
            raise UsageError(f"--output: the folder of {args.output!r} does not exist")
        checked = request(vars(args))  # before torch loads: a misspelled option is answered at once

        from xattn_ref import plan

        run = plan.build(checked)
        if not run.present:  # nothing can run: one line, not an empty report
            devices = ",".join(run.devices)
            raise UsageError(f"--device {devices}: nothing can run here: {'; '.join(run.absent)}")
    except UsageError as exc:
        print(f"xattn-check: error: {exc}", file=sys.stderr)
        return 2

    from xattn_ref.report import Progress, Report
    from xattn_ref.runner import run_tasks

    config, tasks = run.config, run.tasks()
    # progress on a terminal only: a log (CI) gets the report and its summary
    progress = None if args.quiet or not tasks or not sys.stderr.isatty() else Progress(len(tasks))
    start = time.perf_counter()
    results = run_tasks(
        run.targets,
        tasks,
        settings=config.settings(),
        seed=config.seed,
        database=config.example_database(),
        jobs=config.jobs,
        threads=config.threads,
        on_result=None if progress is None else progress.done,
    )
    elapsed = time.perf_counter() - start
    report = Report(run.targets, results, config, run.xfail, elapsed, run.expected, run.notes(), run.absent)
    text = {"text": report.text, "json": report.json, "junit": report.junit}[args.format]()
    for entry in report.unused_xfail():
        print(f"xattn-check: warning: xfail entry {entry!r} matches no result", file=sys.stderr)
    status = report.exit_status()
    if args.output:
        with open(args.output, "w", encoding="utf-8") as file:
            file.write(text + "\n")
        print(f"xattn-check: {report.summary()}; report written to {args.output}")
    else:
        print(text)
    if status == 2:
        print(f"xattn-check: error: {report.nothing_tested()}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
