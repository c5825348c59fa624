"""Every command the README and docs/ show runs as printed.

- every ``bash`` block is valid shell (``bash -n``: an unquoted ``pkg.mod:build()`` is a syntax
  error);
- every ``xattn-check`` / ``python -m xattn_ref`` command there, and every one quoted inline,
  parses with the real parser, its options go together, and its target loads (from the folder a
  preceding ``cd`` names) -- the run itself is left out where it would take minutes;
- every ``pytest --pyargs xattn_ref.suite`` command collects with the plugin (``--co``);
- every ``python`` block runs (its ``test_*`` functions too), but those marked
  ``<!-- fragment -->``;
- the README's downstream commands are the ones ``examples/downstream/tox.ini`` runs, which
  tests/test_downstream.py runs.

``pip install`` and ``tox`` lines are the set-up and the tests that ``.ci/run`` runs.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
import types
from pathlib import Path

import pytest
from _support import without_xattn_environment

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"(<!-- fragment -->\n)?```(bash|python)\n(.*?)```", re.S)


def blocks(lang: str) -> list[tuple[str, str, bool]]:
    """``(page, code, fragment)`` for every fenced block in ``lang``."""
    return [
        (page.name, m.group(3), bool(m.group(1)))
        for page in PAGES
        for m in FENCE.finditer(page.read_text(encoding="utf-8"))
        if m.group(2) == lang
    ]


def commands() -> list[tuple[str, list[str], Path]]:
    """``(page, argv, cwd)`` for every command line of every bash block, ``cd`` followed."""
    found = []
    for page, code, _ in blocks("bash"):
        cwd = ROOT
        for line in code.splitlines():
            argv = shlex.split(line, comments=True)
            while argv and "=" in argv[0] and not argv[0].startswith("-"):
                argv = argv[1:]  # VAR=value prefixes
            if argv[:1] == ["cd"]:
                cwd = (cwd / argv[1]).resolve()
            elif argv:
                found.append((page, argv, cwd))
    for page in PAGES:  # inline `xattn-check ...` in the text and tables
        for span in re.findall(r"`(xattn-check [^`]+)`", page.read_text(encoding="utf-8")):
            found.append((page.name, shlex.split(span), ROOT))
    return found


XATTN = [
    pytest.param(argv, cwd, id=f"{page}: {shlex.join(argv)}"[:120])
    for page, argv, cwd in commands()
    if argv[0] == "xattn-check" or argv[:3] == ["python", "-m", "xattn_ref"]
]
SUITE = [
    pytest.param(argv, cwd, id=f"{page}: {shlex.join(argv)}"[:120])
    for page, argv, cwd in commands()
    if argv[0] == "pytest" and "xattn_ref.suite" in argv
]


@pytest.mark.parametrize(("page", "code"), [(p, c) for p, c, _ in blocks("bash")])
def test_every_bash_block_is_valid_shell(page, code):
    r = subprocess.run(["bash", "-n"], input=code, capture_output=True, text=True, check=False)
    assert r.returncode == 0, f"{page}: {r.stderr}\n{code}"


def test_the_pages_show_commands_at_all():
    assert len(XATTN) >= 20 and len(SUITE) >= 2  # a test that finds nothing proves nothing


@pytest.mark.parametrize(("argv", "cwd"), XATTN)
def test_every_xattn_check_command_parses_and_its_target_loads(argv, cwd, monkeypatch):
    from xattn_ref import cli, plan
    from xattn_ref.request import request

    args = argv[3:] if argv[0] == "python" else argv[1:]
    if any(a in ("...", "TARGET") for a in args):
        pytest.fail(f"a placeholder in a command that should run as printed: {shlex.join(argv)}")
    parser = cli.build_parser()
    parsed = parser.parse_args(cli._join_negative(args, parser))
    checked = request(vars(parsed))
    if parsed.target is None:
        return
    module = parsed.target.rsplit(":", 1)[0]
    needs = module.split(".")[0]
    if module.endswith(".py") or (cwd / f"{module}.py").exists():  # a file of the checkout's
        needs = "x_transformers" if module.startswith("examples/real") else "torch"
    if importlib.util.find_spec(needs) is None:
        pytest.skip(f"{needs} is not installed here (pip install -e '.[real]')")
    monkeypatch.chdir(cwd)
    monkeypatch.syspath_prepend(str(cwd))
    plan.load(parsed.target, checked.kind, checked.options or {})


@pytest.mark.parametrize(("argv", "cwd"), SUITE)
def test_every_pytest_suite_command_collects(argv, cwd, inprocess_pytest, monkeypatch):
    without_xattn_environment(monkeypatch)
    args = [a for a in argv[1:] if a not in ("-n", "auto")]
    result = inprocess_pytest(*args, "--co", "-q", "-p", "no:cacheprovider", cwd=cwd)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-2000:] + result.stderr.str()[-2000:]


@pytest.mark.parametrize(
    ("page", "code"), [pytest.param(p, c, id=p) for p, c, fragment in blocks("python") if not fragment]
)
def test_every_python_block_runs(page, code, monkeypatch):
    """In this process (a process each would import torch again), in a namespace of its own, from
    the checkout's root; then its ``test_*`` functions."""
    if "transformers" in code and importlib.util.find_spec("transformers") is None:
        pytest.skip("transformers is not installed here")
    monkeypatch.chdir(ROOT)
    module = types.ModuleType("__docs__")  # importable, as a script's __main__ is (torch.compile looks)
    monkeypatch.setitem(sys.modules, "__docs__", module)
    namespace = module.__dict__
    exec(compile(code, f"{page} (python block)", "exec"), namespace)
    for name, fn in list(namespace.items()):
        if name.startswith("test_") and callable(fn):
            fn()


def test_the_readmes_downstream_commands_are_the_ones_its_tox_ini_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    tox_ini = (ROOT / "examples" / "downstream" / "tox.ini").read_text(encoding="utf-8")
    shown = [shlex.join(argv) for _, argv, cwd in commands() if cwd.name == "downstream" and argv[0] != "pip"]
    ran = [shlex.join(shlex.split(line)) for line in tox_ini.split("commands =", 1)[1].strip().splitlines()]
    assert shown and shown == ran, (shown, ran)
    assert "examples/downstream" in readme
