"""Every property × dtype × device of every target (parametrized by the xattn_ref plugin)."""

from __future__ import annotations

from typing import Any


def test_property(xattn_run: Any) -> None:
    xattn_run.check()
