"""Sweep: run every kernel property × dtype on the correct built-in kernels over many seeds and
count failures. Correct kernels must never fail (no false failures).

    python scripts/false_failures.py --seeds 20 --examples 50
"""

from __future__ import annotations

import argparse
import sys
import time

from xattn_ref._devices import ALL_DTYPES
from xattn_ref.checks import KERNEL_PROPERTIES
from xattn_ref.profiles import profile_settings
from xattn_ref.runner import run_property
from xattn_ref.strategies import attention_cases
from xattn_ref.targets import BUILTIN_KERNELS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--examples", type=int, default=50, help="examples per property, dtype and seed")
    args = parser.parse_args()
    settings = profile_settings("dev", max_examples=args.examples, database=None)
    start, runs, examples, failures = time.perf_counter(), 0, 0, 0
    for seed in range(args.seeds):
        for name, kernel in BUILTIN_KERNELS.items():
            for prop in KERNEL_PROPERTIES.values():
                for dtype in ALL_DTYPES:
                    r = run_property(
                        prop,
                        kernel,
                        dtype=dtype,
                        device="cpu",
                        seed=seed,
                        key=name,
                        strategy=lambda dt, dev: attention_cases(dtypes=[dt], devices=[dev]),
                        settings=settings,
                    )
                    runs, examples = runs + 1, examples + r.examples
                    if not r.ok:
                        failures += 1
                        print(f"FALSE FAILURE seed={seed} {name} {r.property} {r.dtype}: {r.message}")
                        if r.case is not None:
                            print(f"  {r.case.spec!r}")
    elapsed = time.perf_counter() - start
    print(
        f"{failures} false failures in {runs} runs ({examples} examples, {args.seeds} seeds, "
        f"targets {', '.join(BUILTIN_KERNELS)}) in {elapsed:.0f} s"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
