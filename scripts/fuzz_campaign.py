"""A short HypoFuzz campaign against a target, then the gate run that replays what it found.

    python scripts/fuzz_campaign.py                       # the known-bad -inf softmax, 60 s
    python scripts/fuzz_campaign.py --target pkg.mod:attend --seconds 3600 --processes 16

Runs ``hypothesis fuzz`` (the ``fuzz`` extra) on the property suite for ``--seconds`` in a
folder of its own, stops it, then runs ``pytest --pyargs xattn_ref.suite`` there with the same
target: each property test first replays the failures the campaign saved in the example
database (``.hypothesis/``), then runs its own examples. Both steps are bounded: nothing here
runs until stopped by hand. Exit status: for the default known-bad target (or
``--expect-finding``), 0 when the campaign saved a failure and the gate failed replaying it
("found, then replayed"); for any other target, the gate's own (0 nothing found, 1 a finding).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--target", default="xattn_ref.zoo.known_bad:neg_inf_softmax")
    parser.add_argument(
        "--select", default="finite_output", help="pytest -k expression (default finite_output)"
    )
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--expect-finding", action="store_true", help="the target is known to be bad")
    parser.add_argument("--keep", help="run in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    if shutil.which("hypothesis") is None:
        print(
            "fuzz_campaign: `hypothesis fuzz` needs the fuzz extra: pip install -e '.[fuzz]'", file=sys.stderr
        )
        return 2
    folder = Path(args.keep or tempfile.mkdtemp(prefix="xattn-fuzz-"))
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "XATTN_PROFILE": "ci"}
    suite = ["--pyargs", "xattn_ref.suite", "--xattn-target", args.target, "--xattn-dtype", args.dtype,
             "-k", args.select, "-p", "no:cacheprovider"]  # fmt: skip
    fuzz = ["hypothesis", "fuzz", "-n", str(args.processes), "--no-dashboard", "--", *suite]
    print("$", " ".join(fuzz), f"  (stopped after {args.seconds:g} s)", flush=True)
    # hypothesis fuzz runs until stopped, in worker processes of its own: stop them all
    campaign = subprocess.Popen(fuzz, cwd=folder, env=env, start_new_session=True)
    try:
        campaign.wait(timeout=args.seconds)
    except subprocess.TimeoutExpired:
        os.killpg(campaign.pid, signal.SIGTERM)
        try:
            campaign.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(campaign.pid, signal.SIGKILL)
            campaign.wait()
    saved = [p for p in (folder / ".hypothesis" / "examples").rglob("*") if p.is_file()]
    print(f"the campaign saved {len(saved)} entries in {folder / '.hypothesis'}", flush=True)
    gate = [sys.executable, "-m", "pytest", "-q", *suite, "--xattn-database", ".hypothesis/examples"]
    print("$", " ".join(gate), flush=True)
    r = subprocess.run(gate, cwd=folder, env=env, capture_output=True, text=True, timeout=600, check=False)
    print(r.stdout[-3000:], r.stderr[-2000:], sep="\n")
    replayed = r.returncode == 1 and "example(s) saved for this test" in r.stdout
    print("found, then replayed by the gate" if saved and replayed else "nothing found and replayed")
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    if args.expect_finding or args.target == parser.get_default("target"):
        return 0 if saved and replayed else 1
    return r.returncode


if __name__ == "__main__":
    sys.exit(main())
