"""A small project of its own (examples/downstream) gates its grouped-query, bottom-right causal
kernel as its tox.ini does (and the README shows): the CLI, the property suite through pytest,
and its own tests written with the public strategies and checks.

The three commands run in this process, from the project's folder (a process each would import
torch again); ``pytest -n auto`` runs without ``-n``: tests/test_plugin.py runs the suite under
pytest-xdist."""

from __future__ import annotations

import contextlib
import io
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from _support import without_xattn_environment

from xattn_ref.cli import main

pytest_plugins = ["pytester"]

PROJECT = Path(__file__).resolve().parent.parent / "examples" / "downstream"


def tox_commands() -> list[list[str]]:
    text = (PROJECT / "tox.ini").read_text(encoding="utf-8").split("commands =", 1)[1]
    return [shlex.split(line) for line in text.strip().splitlines()]


def test_a_downstream_projects_gate_and_tests_pass_as_its_tox_ini_runs_them(inprocess_pytest, monkeypatch):
    without_xattn_environment(monkeypatch)
    # a few examples a run: this shows that the commands work as written; that the properties
    # hold on correct kernels and catch bad ones is shown with the examples each needs elsewhere
    monkeypatch.setenv("XATTN_MAX_EXAMPLES", "5")
    commands = tox_commands()
    assert [c[0] for c in commands] == ["xattn-check", "pytest", "pytest"]
    gate, suite, own = commands
    suite_args = [a for a in suite[1:] if a not in ("-n", "auto")]
    result = inprocess_pytest(*suite_args, cwd=PROJECT)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-3000:]
    result = inprocess_pytest(*own[1:], str(PROJECT), cwd=PROJECT)
    result.assert_outcomes(passed=3)  # the project's own tests
    out = io.StringIO()  # the folder is the project's (inprocess_pytest went there)
    with contextlib.redirect_stdout(out):
        status = main([*gate[1:], "--quiet"])
    assert status == 0, out.getvalue()[-3000:]


@pytest.mark.sweep
def test_the_readmes_install_line_for_a_downstream_project_resolves():
    """``pip install -c ../../constraints/cpu.txt -e "../..[pytest]" -e .`` (the README's), as a
    dry run: both projects build and every requirement resolves, torch on the CPU build."""
    readme = (PROJECT.parent.parent / "README.md").read_text(encoding="utf-8")
    line = next(x for x in readme.splitlines() if x.startswith("pip install") and "../..[pytest]" in x)
    argv = [sys.executable, "-m", *shlex.split(line), "--dry-run", "--quiet"]
    r = subprocess.run(argv, cwd=PROJECT, capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
