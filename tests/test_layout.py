"""The package's layout: no import cycle between modules, and the machinery does not import the
zoo (correct kernels, known-bad implementations, adapters, built-ins)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "xattn_ref"


def module_imports() -> dict[str, set[str]]:
    """module -> the xattn_ref modules it imports at module level (TYPE_CHECKING blocks and
    imports inside functions excluded)."""
    modules = {}
    for path in ROOT.rglob("*.py"):
        if "suite" not in path.parts:
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(("xattn_ref", *parts)).removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("xattn_ref"):
                found = {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
                graph[name] |= {m for m in found if m in modules and m != name}
    return graph


def test_no_import_cycle():
    graph = module_imports()
    done: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in path:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in done:
                visit(nxt, [*path, nxt])
        done.add(node)

    for node in sorted(graph):
        if node not in done:
            visit(node, [node])
    assert not cycles, cycles


def test_the_machinery_does_not_import_the_zoo():
    graph = module_imports()
    machinery = [m for m in graph if not m.startswith("xattn_ref.zoo")]
    offenders = {m: sorted(i for i in graph[m] if i.startswith("xattn_ref.zoo")) for m in machinery}
    assert not {m: i for m, i in offenders.items() if i}


def test_every_module_has_one_job_and_stays_small():
    """A module over 500 lines is doing several jobs: split it into a package by job."""
    sizes = {p.relative_to(ROOT).as_posix(): len(p.read_text(encoding="utf-8").splitlines())
             for p in ROOT.rglob("*.py") if "suite" not in p.parts}  # fmt: skip
    assert {p: n for p, n in sizes.items() if n > 500} == {}
