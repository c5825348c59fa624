"""A small project of its own (examples/downstream) gates its grouped-query, bottom-right causal
kernel as its tox.ini does (and the README shows): the CLI, the property suite through pytest,
and its own tests written with the public strategies and checks."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent / "examples" / "downstream"


def tox_commands() -> list[list[str]]:
    text = (PROJECT / "tox.ini").read_text(encoding="utf-8").split("commands =", 1)[1]
    return [shlex.split(line) for line in text.strip().splitlines()]


def test_a_downstream_projects_gate_and_tests_pass_as_its_tox_ini_runs_them():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XATTN_", "PYTEST_"))}
    commands = tox_commands()
    assert [c[0] for c in commands] == ["xattn-check", "pytest", "pytest"]
    module = {"xattn-check": "xattn_ref", "pytest": "pytest"}  # the same entry points, in this Python
    for command in commands:
        argv = [sys.executable, "-m", module[command[0]], *command[1:]]
        r = subprocess.run(
            argv, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=600, check=False
        )
        assert r.returncode == 0, (command, r.stdout[-3000:] + r.stderr[-2000:])
    assert "3 passed" in r.stdout, r.stdout[-2000:]  # the project's own tests


@pytest.mark.sweep
def test_the_readmes_install_line_for_a_downstream_project_resolves():
    """``pip install -c ../../constraints/cpu.txt -e "../..[pytest]" -e .`` (the README's), as a
    dry run: both projects build and every requirement resolves, torch on the CPU build."""
    readme = (PROJECT.parent.parent / "README.md").read_text(encoding="utf-8")
    line = next(x for x in readme.splitlines() if x.startswith("pip install") and "../..[pytest]" in x)
    argv = [sys.executable, "-m", *shlex.split(line), "--dry-run", "--quiet"]
    r = subprocess.run(argv, cwd=PROJECT, capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
