"""Hypothesis settings profiles: ``dev`` (default), ``ci`` (derandomized) and ``thorough``.

Chosen by ``--xattn-profile`` (pytest), ``--profile`` (CLI) or the ``XATTN_PROFILE``
environment variable. No profile has a deadline: first calls of a kernel (compilation, lazy
initialisation) are slow and timing is never a verdict here.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings

__all__ = ["DEFAULT_PROFILE", "ENV_VAR", "PROFILES", "profile_settings", "resolve_profile"]

ENV_VAR = "XATTN_PROFILE"
DEFAULT_PROFILE = "dev"

_COMMON = settings(
    deadline=None,
    report_multiple_bugs=False,
    suppress_health_check=(HealthCheck.too_slow, HealthCheck.data_too_large),
)

#: name -> (settings, what it is for)
PROFILES: dict[str, tuple[settings, str]] = {
    "dev": (settings(_COMMON, max_examples=40), "40 examples per property, random, local database"),
    "ci": (
        settings(
            _COMMON,
            max_examples=30,
            derandomize=True,
            database=None,
            print_blob=True,
            phases=(Phase.explicit, Phase.generate, Phase.target, Phase.shrink),
        ),
        "30 examples per property, derandomized (the same examples every run), no database",
    ),
    "thorough": (settings(_COMMON, max_examples=500), "500 examples per property, random"),
}

for _name, (_settings, _) in PROFILES.items():
    settings.register_profile(f"xattn-{_name}", _settings)


def resolve_profile(name: str | None) -> str:
    """The profile to use: ``name``, else ``$XATTN_PROFILE``, else ``dev``; ValueError if unknown."""
    chosen = name or os.environ.get(ENV_VAR) or DEFAULT_PROFILE
    if chosen not in PROFILES:
        source = "the profile option" if name else f"${ENV_VAR}"
        raise ValueError(f"unknown profile {chosen!r} (from {source}); expected one of {', '.join(PROFILES)}")
    return chosen


def profile_settings(name: str, **overrides: object) -> settings:
    """The settings of profile ``name``, with ``overrides`` (e.g. ``max_examples=10``)."""
    return settings(PROFILES[name][0], **overrides)  # type: ignore[arg-type]
