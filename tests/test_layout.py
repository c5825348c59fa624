"""The package's layout: no import cycle between modules, and the machinery does not import the
zoo (correct kernels, known-bad implementations, adapters, built-ins)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
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


def test_a_kind_is_its_own_module_and_one_entry_in_the_registry(monkeypatch, capsys):
    """``tests/targets/bshd_kind.py`` adds a kind (flash-attn's (B, L, H, D) layout) from outside
    the package; with its entry in ``KINDS`` the CLI gates a kernel of that kind, and a defect
    in one is caught by its property."""
    from targets.bshd_kind import BSHDKind

    from xattn_ref.cli import main
    from xattn_ref.kinds import KINDS

    monkeypatch.setitem(KINDS, "bshd", BSHDKind())
    common = ["--kind", "bshd", "--dtype", "float32,float16", "--profile", "ci", "--max-examples", "10"]
    common += ["--jobs", "1"]
    status = main(["targets.bshd_kind:bshd_sdpa", *common, "--quiet"])
    out = capsys.readouterr().out
    assert status == 0 and "every tested property holds" in out, out
    status = main(["targets.bshd_kind:bshd_neg_inf_softmax", *common, "--property", "finite_output"])
    out = capsys.readouterr().out
    assert status == 1 and "finite_output failed" in out, out


def test_every_kind_declares_its_properties_and_none_inherits_them_from_the_base():
    """A property added later applies to a kind only where the kind names it."""
    from xattn_ref.checks import PROPERTIES
    from xattn_ref.kinds import KINDS
    from xattn_ref.kinds.base import Kind

    assert not hasattr(Kind, "properties")
    for kind in KINDS.values():
        assert kind.properties and set(kind.properties) <= set(PROPERTIES), kind


HEAVY = ("torch", "hypothesis", "numpy", "transformers", "x_transformers", "peft", "einops", "pytest")


def _loads() -> dict[str, set[str]]:
    """module -> the heavy packages (:data:`HEAVY`) its import loads, at module level and
    transitively."""
    graph = module_imports()
    loads: dict[str, set[str]] = {}
    for name in graph:
        path = ROOT.joinpath(*name.split(".")[1:]).with_suffix(".py")
        if not path.exists():
            path = ROOT.joinpath(*name.split(".")[1:], "__init__.py")
        body = ast.parse(path.read_text(encoding="utf-8")).body
        found = [n.module for n in body if isinstance(n, ast.ImportFrom) and n.module]
        found += [a.name for n in body if isinstance(n, ast.Import) for a in n.names]
        loads[name] = {m.split(".")[0] for m in found} & set(HEAVY)
    changed = True
    while changed:
        changed = False
        for name, deps in graph.items():
            more = set().union(*(loads[d] for d in deps)) - loads[name]
            if more:
                loads[name] |= more
                changed = True
    return loads


def _heavy_modules() -> set[str]:
    """The package's modules whose import (at module level, transitively) loads torch,
    Hypothesis or an optional dependency."""
    return {name for name, packages in _loads().items() if packages}


def _inner_imports() -> Iterator[tuple[str, str, int, set[str]]]:
    """(module, its path, line, the package's modules named) of each ``from xattn_ref... import``
    inside a function."""
    graph = module_imports()
    for path in ROOT.rglob("*.py"):
        if "suite" in path.parts:
            continue
        parts = path.relative_to(ROOT).with_suffix("").parts
        module = ".".join(("xattn_ref", *parts)).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for sub in ast.walk(node):
                if isinstance(sub, ast.ImportFrom) and sub.module and sub.module.startswith("xattn_ref"):
                    named = {sub.module, *(f"{sub.module}.{a.name}" for a in sub.names)}
                    yield module, str(path.relative_to(ROOT)), sub.lineno, named & set(graph)


def test_an_import_inside_a_function_is_of_something_heavy():
    """Imports go at the top, where readers and this file's graph see them; one inside a function
    defers something heavy (torch, Hypothesis, an optional dependency, or a module of ours that
    loads them), so that the pytest plugin stays inert in projects that do not use it and the
    CLI answers a usage error before torch loads."""
    heavy = _heavy_modules()
    light_inside = [
        f"{path}:{line} {sorted(named)}"
        for _, path, line, named in _inner_imports()
        if named and not named & heavy and not any(".suite" in n for n in named)
    ]
    assert light_inside == []


def test_an_import_inside_a_function_defers_what_its_module_does_not_load_already():
    """An import of one of our modules inside a function that loads nothing its own module does
    not load already defers nothing: it goes at the top, unless there it would close an import
    cycle, or it is the machinery's one door to the zoo (``plan.builtin_targets``)."""
    graph, loads = module_imports(), _loads()

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                todo.extend(graph[node])
        return False

    pointless = [
        f"{path}:{line} {sorted(named)}"
        for module, path, line, named in _inner_imports()
        if named
        and set().union(*(loads[n] for n in named)) <= loads[module]
        and not any(reaches(n, module) for n in named)
        and not (any(n.startswith("xattn_ref.zoo") for n in named) and not module.startswith("xattn_ref.zoo"))
    ]
    assert pointless == []
