"""Test tiers: ``-m "not sweep"`` is the default tier (tox), ``-m sweep`` the sweeps
(``tox -e sweep``). A test marked ``upstream`` checks a real library's behaviour: its failure
report says so, so that it reads "upstream changed", not "xattn_ref broke"."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

# The package's own tests never assert timings: no Hypothesis deadline (first calls of torch
# ops are slow, and these machines are shared); and they are derandomized, so a test that counts
# what the strategies draw sees the same draws every run (never flaky).
from hypothesis import settings

settings.register_profile("xattn-tests", deadline=None, derandomize=True, database=None)
settings.load_profile("xattn-tests")

# One torch thread per test process: the tests' tensors are small, and pytest-xdist runs a worker
# per core, so torch's default (a thread per core in every worker) oversubscribes the cores; on
# 2 cores that made tests/test_meta.py 13x slower (306 s against 23 s, docs/figures.md).
torch.set_num_threads(1)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    if report.failed and call.when == "call" and item.get_closest_marker("upstream") is not None:
        report.sections.append(
            (
                "upstream",
                "This test checks the behaviour of a real library (torch, transformers). If it fails, the "
                "library changed (a bug fixed or a new one): check the finding by hand and update the test "
                "and docs/real-libraries.md; xattn_ref itself may be fine.",
            )
        )
    return report


@pytest.fixture(scope="session")
def _imported_before_pytester() -> None:
    """What an in-process pytest run may import, imported before ``pytester`` takes its snapshot
    of ``sys.modules`` (a session fixture is set up first): it forgets the modules imported after
    the snapshot, and some of torch's cannot be imported twice."""
    import torch._dynamo  # noqa: F401  (registers torch libraries: once per process)

    from xattn_ref import plan

    plan.builtin_targets()


@pytest.fixture
def inprocess_pytest(
    _imported_before_pytester: None, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., pytest.RunResult]:
    """``inprocess_pytest(*args, cwd=None)``: ``pytest ARGS`` in this process (a process each would
    import torch again), from ``cwd`` (also put on ``sys.path``, as the folder a command runs in)
    when given; torch's thread count and Hypothesis's profile, which a run may set for the whole
    process, are restored after it. A test module that uses it declares
    ``pytest_plugins = ["pytester"]``."""

    def run(*args: str, cwd: Path | None = None) -> pytest.RunResult:
        if cwd is not None:
            monkeypatch.chdir(cwd)
            monkeypatch.syspath_prepend(str(cwd))
            args = (*args, f"--rootdir={cwd}")
        threads, profile = torch.get_num_threads(), settings.get_current_profile_name()
        try:
            return pytester.runpytest_inprocess(*args)
        finally:
            torch.set_num_threads(threads)
            settings.load_profile(profile)

    return run
