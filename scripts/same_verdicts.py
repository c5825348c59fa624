"""Same seeds, same verdicts: run the main job (several seeds) and every known-bad kernel with
this checkout and with another one, and compare every result (status, examples run, message and
minimal case of each property x dtype). For a change that must not move a verdict (a speed-up,
a refactor): check out the old commit beside this one and point the script at it.

    git worktree add /tmp/before HEAD~1
    python scripts/same_verdicts.py /tmp/before

Exits 1 when any run differs, naming it. Each tree runs as ``python -m xattn_ref`` with that
tree first on ``PYTHONPATH`` (the installed dependencies are shared).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
FIELDS = ("target", "property", "dtype", "device", "status", "examples", "message", "case")


def runs(seeds: int, profile: str) -> list[list[str]]:
    sys.path.insert(0, str(HERE))
    from xattn_ref.zoo.known_bad import KNOWN_BAD

    main_job = [["--seed", str(s)] for s in range(1, seeds + 1)]
    spec = "xattn_ref.zoo.known_bad:{}"
    return main_job + [[spec.format(n), "--seed", "1", "--profile", profile] for n in sorted(KNOWN_BAD)]


def results(tree: Path, args: list[str]) -> tuple[int, list[tuple[Any, ...]]]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")])}
        done = subprocess.run(
            [sys.executable, "-m", "xattn_ref", *args, "--format", "json", "--output", str(report)],
            env=env, cwd=tmp, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if not report.exists():
            raise SystemExit(f"{tree}: xattn-check {' '.join(args)} wrote no report: {done.stderr.strip()}")
        found = json.loads(report.read_text())["results"]
        return done.returncode, [tuple(r.get(k) for k in FIELDS) for r in found]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("other", type=Path, help="the other checkout (its repository root)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the main job (default 3)")
    parser.add_argument("--profile", default="quick", help="profile of the known-bad runs (default quick)")
    args = parser.parse_args()
    if not (args.other / "xattn_ref" / "__init__.py").exists():
        parser.error(f"other: {args.other} holds no xattn_ref package")
    differ = 0
    todo = runs(args.seeds, args.profile)
    for run in todo:
        ours, theirs = results(HERE, run), results(args.other.resolve(), run)
        if ours != theirs:
            differ += 1
            print(f"differs: xattn-check {' '.join(run)} (exit {theirs[0]} there, {ours[0]} here)")
    print(f"{len(todo) - differ} of {len(todo)} runs give the same results in both trees")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
