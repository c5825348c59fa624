"""Collects the figures the benchmarks record and prints them at the end of the run."""

from __future__ import annotations

import pytest

FIGURES: list[str] = []


@pytest.fixture
def figure():
    """``figure("text")`` adds a line to the summary printed after the run."""
    return FIGURES.append


def pytest_terminal_summary(terminalreporter):
    if FIGURES:
        terminalreporter.section("xattn_ref figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
