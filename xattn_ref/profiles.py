"""Hypothesis settings profiles: ``dev`` (default), ``ci`` (a fixed seed), ``thorough`` and
``quick`` (the main job's default).

Chosen by ``--profile`` (CLI), ``--xattn-profile`` (pytest) or ``$XATTN_PROFILE``. No profile
has a deadline: first calls of a kernel (compilation, lazy initialisation) are slow and timing
is never a verdict here. The seed is not part of a profile: ``dev`` and ``thorough`` draw a
random one unless ``--seed`` names it; ``ci`` uses seed 0 unless ``--seed`` names another,
so a CI gate draws the same examples every run and never flakes.
"""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, settings

from xattn_ref.options import DEFAULT_PROFILE, FIXED_SEED_PROFILES

__all__ = ["DEFAULT_PROFILE", "FIXED_SEED_PROFILES", "PROFILES", "profile_settings"]

# Every field that matters is set here: the profiles must not inherit whatever default profile
# the user's process loaded (a derandomized test profile once changed what "dev" draws).
_COMMON = settings(
    deadline=None,
    derandomize=False,
    database=None,
    report_multiple_bugs=False,
    phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink),
    suppress_health_check=(HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much),
)

#: name -> (settings, what it is for)
PROFILES: dict[str, tuple[settings, str]] = {
    "dev": (settings(_COMMON, max_examples=40), "40 examples per run, a random seed"),
    "ci": (
        settings(_COMMON, max_examples=30),
        "30 examples per run, seed 0 unless given: the same every run",
    ),
    "thorough": (settings(_COMMON, max_examples=500), "500 examples per run, a random seed"),
    # the main job's default: an overview of 17 targets, each run a short one
    "quick": (settings(_COMMON, max_examples=10), "10 examples per run, a random seed"),
}



def profile_settings(name: str, **overrides: object) -> settings:
    """The settings of profile ``name``, with ``overrides`` (e.g. ``max_examples=10``)."""
    return settings(PROFILES[name][0], **overrides)  # type: ignore[arg-type]
