"""A small project of its own (examples/downstream) imports the public strategies and checks for
its grouped-query, bottom-right causal kernel and runs them with its own pytest configuration."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent / "examples" / "downstream"


def test_a_downstream_projects_tests_pass_with_the_public_api():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XATTN_", "PYTEST_"))}
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-W", "error::DeprecationWarning"],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "3 passed" in r.stdout, r.stdout[-2000:]
