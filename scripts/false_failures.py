"""Sweep: run every kernel property × dtype on the correct built-in kernels over many seeds and
count failures. Correct kernels must never fail (no false failures).

    python scripts/false_failures.py --seeds 20 --examples 50
"""

from __future__ import annotations

import argparse
import sys
import time

from xattn_ref._devices import ALL_DTYPES
from xattn_ref.kinds import KINDS
from xattn_ref.profiles import profile_settings
from xattn_ref.runner import run_property
from xattn_ref.targets import BUILTINS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--examples", type=int, default=50, help="examples per property, dtype and seed")
    args = parser.parse_args()
    settings = profile_settings("dev", max_examples=args.examples)
    targets = [b.load() for b in BUILTINS if b.should_pass]
    start, runs, examples, failures = time.perf_counter(), 0, 0, 0
    for seed in range(args.seeds):
        for target in targets:
            for prop in KINDS[target.kind].properties:
                for dtype in ALL_DTYPES:
                    r = run_property(target, prop, dtype=dtype, device="cpu", seed=seed, settings=settings)
                    runs, examples = runs + 1, examples + r.examples
                    if r.status in ("failed", "error"):
                        failures += 1
                        print(f"FALSE FAILURE seed={seed} {target.name} {r.id}: {r.message}")
                        print(f"  {r.case}")
    elapsed = time.perf_counter() - start
    print(
        f"{failures} false failures in {runs} runs ({examples} examples, {args.seeds} seeds, "
        f"targets {', '.join(t.name for t in targets)}) in {elapsed:.0f} s"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
