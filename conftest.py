"""Root conftest: the xattn_ref plugin is registered by its entry point once installed; from a
bare checkout (``PYTHONPATH=.``) it is loaded here instead."""

from __future__ import annotations

import importlib.metadata

_installed = any(ep.value == "xattn_ref.plugin" for ep in importlib.metadata.entry_points(group="pytest11"))
pytest_plugins = [] if _installed else ["xattn_ref.plugin"]

# The package's own tests never assert timings: no Hypothesis deadline (first calls of torch
# ops are slow, and these machines are shared); and they are derandomized, so a test that counts
# what the strategies draw sees the same draws every run (never flaky).
from hypothesis import settings  # noqa: E402

settings.register_profile("xattn-tests", deadline=None, derandomize=True, database=None)
settings.load_profile("xattn-tests")
