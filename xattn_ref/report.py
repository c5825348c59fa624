"""Reports: the verdict matrix (text), JSON and JUnit; failure reports with the minimal case, the
Python that rebuilds it and the command that reproduces it; xfail files, read and matched (one
matcher for the CLI and the plugin); progress while a run goes on; the exit status.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from xattn_ref.checks import PROPERTIES
from xattn_ref.config import RunConfig
from xattn_ref.errors import UsageError
from xattn_ref.options import did_you_mean
from xattn_ref.precision import summarize
from xattn_ref.runner import Result

__all__ = [
    "Report",
    "Progress",
    "failure_report",
    "read_xfail",
    "rebuild_snippet",
    "reproduce_command",
    "xfail_reason",
]

CELL = {
    "passed": "pass",
    "failed": "FAIL",
    "error": "ERROR",
    "skipped": "skip",
    "not-applicable": "n/a",
}


def read_xfail(path: str, source: str = "--xfail") -> dict[str, str]:
    """An xfail file: one id per line, ``property`` or ``property[dtype-device]``; ``#`` starts a
    comment, which becomes the reason. Raises :class:`UsageError`."""
    try:
        with open(path, encoding="utf-8") as file:
            lines = file.read().splitlines()
    except OSError as exc:
        raise UsageError(f"{source}: cannot read {path!r}: {exc.strerror}") from None
    entries: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        entry, _, comment = line.partition("#")
        prop = entry.strip().partition("[")[0]
        if prop and prop not in PROPERTIES:
            raise UsageError(
                f"{source}: {path}, line {number}: unknown property {prop!r}"
                + (did_you_mean(prop, list(PROPERTIES)) or f"; expected one of {', '.join(PROPERTIES)}")
            )
        if entry.strip():
            entries[entry.strip()] = comment.strip() or f"listed in {path}"
    return entries


def xfail_reason(entries: dict[str, str], prop: str, dtype: str, device: str) -> tuple[str, str] | None:
    """``(entry, reason)`` of the xfail entry that names this run exactly (``property`` or
    ``property[dtype-device]``), or None. Never a substring match."""
    for entry in (f"{prop}[{dtype}-{device}]", prop):
        if entry in entries:
            return entry, entries[entry]
    return None


def reproduce_command(target: Any, result: Result, config: RunConfig) -> str:
    """The ``xattn-check`` command that runs exactly this property, dtype and device again."""
    return shlex.join(
        [
            "xattn-check",
            *target.cli_args(),
            "--property",
            result.property,
            "--dtype",
            result.dtype,
            "--device",
            result.device,
            *config.reproduce_args(),
        ]
    )


def rebuild_snippet(target: Any, result: Result) -> str | None:
    """Python that rebuilds the minimal case and, for a target loaded by its spec, runs the
    property on the target as the gate calls it (its kind and options: ``--call``, ``--select``,
    ``--backward``, a factory's arguments), raising the failure again; in the kind's plain
    convention, also the call of the target itself, ``fn``."""
    if not result.snippet:
        return None
    lines = [result.snippet]
    spec = target.spec or target.name
    if ":" not in spec:  # held in-process (as_target): the caller has the target
        if result.how:
            lines += ["# fn: your target", result.how]
        return "\n".join(lines)
    lines += [
        "from xattn_ref.checks import check",
        "from xattn_ref.plan import load",
        f"call = load({spec!r}, {target.kind.name!r}, {target.given_options()!r}).call"
        "  # as the gate calls it",
    ]
    if result.how:
        lines += ["fn = call.fn_for(case.dtype, str(case.device))  # the target itself", result.how]
    lines.append(f"check({result.property!r}, call, case)  # raises the failure above")
    return "\n".join(lines)


def failure_report(target: Any, result: Result, config: RunConfig) -> str:
    """A failure or error in words: what broke, on which minimal example, and how to reproduce it."""
    what = "failed" if result.status == "failed" else "error (the target misbehaved on a valid input)"
    lines = [
        f"{result.property} {what} for {target.name} [{result.dtype}, {result.device}] "
        f"after {result.examples} examples",
        f"  {result.message}",
    ]
    if result.hint:
        lines.append(f"  hint: {result.hint}")
    if result.case is not None:
        label = "minimal example" if result.shrunk else "example (not shrunk: the first error is)"
        lines.append(f"  {label}: {result.case}")
        snippet = rebuild_snippet(target, result)
        if snippet:
            lines.append("  rebuild it in Python:")
            lines.extend("    " + line for line in snippet.splitlines())
    lines.append(f"  reproduce: {reproduce_command(target, result, config)}")
    return "\n".join(lines)


@dataclass
class Report:
    """The results of a run and what they mean: xfails, root causes, verdicts, exit status.

    ``expected``: for the main job, target name -> whether it should pass.
    """

    targets: Sequence[Any]
    results: list[Result]
    config: RunConfig
    xfail: dict[str, str]
    elapsed: float
    expected: dict[str, bool] | None = None
    notes: tuple[str, ...] = ()  # e.g. TF32 budgets
    absent: tuple[str, ...] = ()  # why each requested device that is absent here did not run

    def _target(self, name: str) -> Any:
        return next(t for t in self.targets if t.name == name)

    def xfailed(self, r: Result) -> str | None:
        """The reason a finding is expected: its own xfail entry, or its root's (an xfail of a
        root covers what follows from it)."""
        if r.status not in ("failed", "error"):
            return None
        match = xfail_reason(self.xfail, r.property, r.dtype, r.device)
        if match is None and r.root is not None and self.follows(r):
            root = xfail_reason(self.xfail, r.root, r.dtype, r.device)
            return None if root is None else f"{root[1]} (follows from {r.root})"
        return None if match is None else match[1]

    def follows(self, r: Result) -> bool:
        """A failure whose only evidence is the non-finite value its root property reports."""
        return r.root is not None and any(
            o.target == r.target
            and o.property == r.root
            and o.dtype == r.dtype
            and o.device == r.device
            and o.status == "failed"
            for o in self.results
        )

    def findings(self, target: str | None = None) -> list[Result]:
        return [
            r
            for r in self.results
            if r.status in ("failed", "error") and not self.xfailed(r) and target in (None, r.target)
        ]

    def unused_xfail(self) -> list[str]:
        used = {m[0] for r in self.results if (m := xfail_reason(self.xfail, r.property, r.dtype, r.device))}
        return [e for e in self.xfail if e not in used]

    @property
    def tested(self) -> bool:
        return any(r.tested for r in self.results)

    def as_expected(self, target: str) -> bool:
        assert self.expected is not None
        return (not self.findings(target)) == self.expected[target]

    @property
    def ok(self) -> bool:
        if self.expected is not None:
            return all(self.as_expected(t.name) for t in self.targets)
        return not self.findings()

    def exit_status(self) -> int:
        """0 every property holds, 1 a finding (a failure or a target error), 2 nothing tested."""
        if not self.tested:
            return 2
        return 0 if self.ok else 1

    def nothing_tested(self) -> str:
        reasons = dict.fromkeys([*(r.message for r in self.results if not r.tested), *self.absent])
        return "nothing was tested: " + ("; ".join(reasons) if reasons else "no run was selected")

    def summary(self) -> str:
        """The last line: the conclusion, then how much was run."""
        examples = f"{sum(r.examples for r in self.results)} examples in {self.elapsed:.1f} s"
        if not self.tested:
            return f"NOTHING TESTED ({examples})"
        if self.expected is not None:
            names = [t.name for t in self.targets]
            hold = sum(self.expected[n] and self.as_expected(n) for n in names)
            bad = sum(not self.expected[n] and self.as_expected(n) for n in names)
            wrong = [n for n in names if not self.as_expected(n)]
            verdict = "ok" if not wrong else "FAILED"
            text = f"{verdict}: {len(names)} targets: {hold} hold, {bad} fail as expected"
            text += f", {len(wrong)} NOT as expected ({', '.join(wrong)})" if wrong else ""
            return f"{text}; {examples}"
        if self.ok:
            return f"ok: every tested property holds; {examples}"
        failed = len({(r.target, r.property) for r in self.findings()})
        return f"FAILED: {failed} failing propert{'y' if failed == 1 else 'ies'}; {examples}"

    # --- text --------------------------------------------------------------------------------

    def _cell(self, r: Result) -> str:
        if self.xfailed(r):
            return "xfail"
        if r.status == "failed" and self.follows(r):
            return "(follows)"
        return CELL[r.status]

    def text(self) -> str:
        """The verdict matrix of each target, then one report per failing property, then the
        summary line. The main job (``expected`` given) is one line per target as expected,
        the matrix only for a target that is not, and one example report of a finding."""
        lines = [f"xattn-check: {self.config.describe()}", *(f"xattn-check: {n}" for n in self.notes)]
        lines += [f"xattn-check: not run: {reason}" for reason in self.absent] + [""]
        na = [
            {
                (r.property, r.message)
                for r in self.results
                if r.target == t.name and r.status == "not-applicable"
            }
            for t in self.targets
        ]
        common = set.intersection(*na) if len(self.targets) > 1 and na else set()
        matrix = [t for t in self.targets if self.expected is None or not self.as_expected(t.name)]
        if self.expected is not None:
            for t in self.targets:
                mine = [r for r in self.results if r.target == t.name]
                mark = "ok " if self.as_expected(t.name) else "BAD"
                lines.append(f"  {mark} {t.name} [{t.kind.name}]: {self._verdict(t.name, mine)}")
            lines.append("")
        for target in matrix:
            lines += [*self._matrix(target, common), ""]
        shown: set[tuple[str, str]] = set()
        reported = {t.name for t in matrix}
        for r in self.findings():
            if self.follows(r) or (r.target, r.property) in shown:
                continue  # one report per property; the matrix shows the rest
            if r.target not in reported:
                if shown:  # an expected finding of the main job: one example is enough
                    continue
                lines.append("What a finding looks like (an expected one):")
            shown.add((r.target, r.property))
            lines.append(failure_report(self._target(r.target), r, self.config))
            lines.append("")
        lines += [f"n/a for every target: {prop}: {reason}" for prop, reason in sorted(common)]
        lines.append(f"xattn-check: {self.summary()}")
        return "\n".join(lines)

    def _matrix(self, target: Any, common: set[tuple[str, str]]) -> list[str]:
        """One target's verdicts: a property a row, a dtype/device a column."""
        mine = [r for r in self.results if r.target == target.name]
        props = list(dict.fromkeys(r.property for r in mine))
        columns = list(dict.fromkeys((r.dtype, r.device) for r in mine if r.status != "skipped"))
        lines = [f"{target.name} ({target.kind.name}: {target.signature})"]
        width = max([len(p) for p in props] + [8])
        lines.append(" " * (width + 2) + "  ".join(f"{dt + '/' + d:>15}" for dt, d in columns))
        for prop in props:
            cells = [
                next(self._cell(r) for r in mine if (r.property, r.dtype, r.device) == (prop, dt, d))
                for dt, d in columns
            ]
            lines.append(f"  {prop:<{width}}" + "  ".join(f"{c:>15}" for c in cells))
        for reason in dict.fromkeys(r.message for r in mine if r.status == "skipped"):
            lines.append(f"  skipped: {reason}")
        reasons: dict[str, list[str]] = {}
        for r in mine:
            if r.status == "not-applicable" and (r.property, r.message) not in common:
                reasons.setdefault(r.property, [])
                if r.message not in reasons[r.property]:
                    reasons[r.property].append(r.message)
        for prop, said in reasons.items():  # one line a property: the first reason, and how many more
            more = f" (and {len(said) - 1} more like it)" if len(said) > 1 else ""
            lines.append(f"  n/a: {prop}: {said[0]}{more}")
        lines += [f"  note: {text}" for text in summarize(n for r in mine for n in r.notes)]
        if any(r.status == "failed" and self.follows(r) for r in mine):
            lines.append("  (follows): fails only through the non-finite value that finite_output or")
            lines.append("             finite_grad reports; see that property's report")
        lines.append(f"  verdict: {self._verdict(target.name, mine)}")
        return lines

    def _verdict(self, target: str, mine: list[Result]) -> str:
        if not any(r.tested for r in mine):
            verdict = "nothing tested"
        else:
            # one unit, as the summary line's: properties; then the runs (dtype x device) behind them
            found = self.findings(target)
            failed = sum(r.status == "failed" for r in found)
            errors = sum(r.status == "error" for r in found)
            props = len({r.property for r in found})
            runs = [f"{failed} run{'s' * (failed != 1)} failed"] if failed else []
            runs += [f"{errors} target error{'s' * (errors != 1)}"] if errors else []
            verdict = (
                f"{props} failing propert{'y' if props == 1 else 'ies'} ({', '.join(runs)})"
                if props
                else "every tested property holds"
            )
        if self.expected is not None:
            verdict += " (as expected)" if self.as_expected(target) else " (NOT as expected)"
        return verdict

    # --- json and junit ------------------------------------------------------------------------

    def json(self) -> str:
        def entry(r: Result) -> dict[str, Any]:
            target = self._target(r.target)
            finding = r.status in ("failed", "error")
            return {
                "target": r.target,
                "kind": target.kind.name,
                "property": r.property,
                "dtype": r.dtype,
                "device": r.device,
                "status": r.status,
                "examples": r.examples,
                "applied": r.applied,
                "message": r.message,
                "hint": r.hint,
                "notes": summarize(r.notes),
                "follows_from": r.root if finding and self.follows(r) else None,
                "expected_failure": self.xfailed(r) is not None,
                "case": r.case,
                "rebuild": rebuild_snippet(target, r),
                "reproduce": reproduce_command(target, r, self.config) if finding else None,
            }

        return json.dumps(
            {
                "ok": self.exit_status() == 0,
                "exit_status": self.exit_status(),
                "config": self.config.describe(),
                "notes": list(self.notes),
                "seed": self.config.seed,
                "results": [entry(r) for r in self.results],
            },
            indent=2,
        )

    def junit(self) -> str:
        suite = ET.Element(
            "testsuite",
            name="xattn_ref",
            tests=str(len(self.results)),
            time=f"{self.elapsed:.3f}",
            failures=str(sum(r.status == "failed" and not self.xfailed(r) for r in self.results)),
            errors=str(sum(r.status == "error" and not self.xfailed(r) for r in self.results)),
            skipped=str(sum(not r.tested or bool(self.xfailed(r)) for r in self.results)),
        )
        for r in self.results:
            case = ET.SubElement(suite, "testcase", classname=r.target, name=r.id)
            if not r.tested:
                ET.SubElement(case, "skipped", message=f"{r.status}: {r.message}")
            elif self.xfailed(r):
                ET.SubElement(case, "skipped", message=f"xfail: {self.xfailed(r)}")
            elif r.status in ("failed", "error"):
                node = ET.SubElement(case, "failure" if r.status == "failed" else "error", message=r.message)
                node.text = failure_report(self._target(r.target), r, self.config)
        return ET.tostring(suite, encoding="unicode")


class Progress:
    """Progress on a stream (stderr): a live line on a terminal, one line per finished run in a
    log. ``done(result)`` after each run."""

    def __init__(self, total: int, stream: TextIO | None = None, *, live: bool | None = None) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.count = 0
        self.start = time.perf_counter()

    def done(self, r: Result) -> None:
        self.count += 1
        elapsed = time.perf_counter() - self.start
        line = (
            f"[{self.count}/{self.total} {elapsed:5.1f} s] {r.target} {r.property} {r.dtype}/{r.device}: "
            f"{r.status} ({r.examples} examples)"
        )
        if self.live:
            self.stream.write("\r\033[K" + line[:160])
            if self.count == self.total:
                self.stream.write("\r\033[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
