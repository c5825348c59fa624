"""How a run is configured, resolved once for both front ends (``xattn-check`` and the pytest
plugin): profile, seed, example database, torch threads, parallel jobs, examples per run.

Each value comes from its option, else its environment variable, else the default; a bad
value is a :class:`~xattn_ref.errors.UsageError` naming where it came from.

| option | environment | default |
|---|---|---|
| ``--profile`` | ``XATTN_PROFILE`` | ``dev`` |
| ``--seed`` | ``XATTN_SEED`` | random (``ci``: 0) |
| ``--database`` | ``XATTN_DATABASE`` | none |
| ``--threads`` | ``XATTN_THREADS`` | 1 (cases are small: more threads only contend) |
| ``--jobs`` | ``XATTN_JOBS`` | the number of cores |
| ``--max-examples`` | ``XATTN_MAX_EXAMPLES`` | the profile's |
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any

from hypothesis import settings as Settings
from hypothesis.database import DirectoryBasedExampleDatabase, ExampleDatabase

from xattn_ref.errors import UsageError
from xattn_ref.profiles import DEFAULT_PROFILE, FIXED_SEED_PROFILES, PROFILES, profile_settings

__all__ = ["ENV", "RunConfig", "resolve_config"]

#: option name -> environment variable
ENV = {
    "profile": "XATTN_PROFILE",
    "seed": "XATTN_SEED",
    "database": "XATTN_DATABASE",
    "threads": "XATTN_THREADS",
    "jobs": "XATTN_JOBS",
    "max_examples": "XATTN_MAX_EXAMPLES",
}


@dataclass(frozen=True)
class RunConfig:
    """A resolved configuration. ``seed`` is the base seed of every run."""

    profile: str
    seed: int
    seed_given: bool
    database: str | None
    threads: int
    jobs: int
    max_examples: int | None

    def settings(self) -> Settings:
        overrides: dict[str, Any] = {}
        if self.max_examples is not None:
            overrides["max_examples"] = self.max_examples
        return profile_settings(self.profile, **overrides)

    def example_database(self) -> ExampleDatabase | None:
        return None if self.database is None else DirectoryBasedExampleDatabase(self.database)

    def reproduce_args(self) -> list[str]:
        """The options that make ``xattn-check`` draw the same examples again."""
        args = ["--profile", self.profile]
        if self.seed_given or self.profile not in FIXED_SEED_PROFILES:
            args += ["--seed", str(self.seed)]
        if self.max_examples is not None:
            args += ["--max-examples", str(self.max_examples)]
        if self.database is not None:
            args += ["--database", self.database]
        return args

    def describe(self, *, jobs: bool = True) -> str:
        """One line for a report header (``jobs=False`` where another runner parallelizes)."""
        examples = self.max_examples or self.settings().max_examples
        seed = f"seed {self.seed}" + (
            "" if self.seed_given or self.profile in FIXED_SEED_PROFILES else " (random)"
        )
        parts = [f"profile {self.profile} ({examples} examples per run)", seed]
        if self.database is not None:
            parts.append(f"database {self.database}")
        parts.append(f"torch threads {self.threads}")
        if jobs:
            parts.append(f"jobs {self.jobs}")
        return ", ".join(parts)


def _pick(given: dict[str, Any], name: str, flag_prefix: str) -> tuple[Any, str]:
    if given.get(name) is not None:
        return given[name], flag_prefix + name.replace("_", "-")
    env = os.environ.get(ENV[name])
    if env:
        return env, "$" + ENV[name]
    return None, "default"


def _int(value: Any, source: str, minimum: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"{source} must be an integer, got {value!r}") from None
    if number < minimum:
        raise UsageError(f"{source} must be at least {minimum}, got {number}")
    return number


def resolve_config(given: dict[str, Any], *, flag_prefix: str = "--") -> RunConfig:
    """A :class:`RunConfig` from options (name -> value or None), then the environment, then the
    defaults. ``flag_prefix`` names the options in errors (``--`` or ``--xattn-``)."""
    profile, source = _pick(given, "profile", flag_prefix)
    profile = profile or DEFAULT_PROFILE
    if profile not in PROFILES:
        raise UsageError(f"{source}: unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    seed, source = _pick(given, "seed", flag_prefix)
    seed_given = seed is not None
    if seed_given:
        seed = _int(seed, source, 0)
    else:
        seed = 0 if profile in FIXED_SEED_PROFILES else random.randrange(2**32)
    database, source = _pick(given, "database", flag_prefix)
    if database is not None and os.path.exists(database) and not os.path.isdir(database):
        raise UsageError(f"{source}: {database!r} exists and is not a directory")
    threads, source = _pick(given, "threads", flag_prefix)
    threads = 1 if threads is None else _int(threads, source, 1)
    jobs, source = _pick(given, "jobs", flag_prefix)
    jobs = (os.cpu_count() or 1) if jobs is None else _int(jobs, source, 1)
    max_examples, source = _pick(given, "max_examples", flag_prefix)
    max_examples = None if max_examples is None else _int(max_examples, source, 1)
    return RunConfig(profile, int(seed), seed_given, database, threads, jobs, max_examples)
