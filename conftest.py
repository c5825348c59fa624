"""Root conftest: the xattn_ref plugin is registered by its entry point once installed; from a
bare checkout (``PYTHONPATH=.``) it is loaded here instead."""

from __future__ import annotations

import importlib.metadata

_installed = any(ep.value == "xattn_ref.plugin" for ep in importlib.metadata.entry_points(group="pytest11"))
pytest_plugins = [] if _installed else ["xattn_ref.plugin"]
