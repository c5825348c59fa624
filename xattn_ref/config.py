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
from xattn_ref.options import RUN_OPTIONS, pick
from xattn_ref.profiles import DEFAULT_PROFILE, FIXED_SEED_PROFILES, profile_settings

__all__ = ["RunConfig", "resolve_config"]


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


_BY_NAME = {o.name: o for o in RUN_OPTIONS}


def _value(given: dict[str, Any], name: str, prefix: str) -> Any:
    """The option's value from ``given``, the environment or None, parsed by its one parser."""
    option = _BY_NAME[name]
    value, source = pick(option, given, prefix)
    return None if value is None else option.parse(value, source)


def resolve_config(
    given: dict[str, Any], *, flag_prefix: str = "--", default_profile: str = DEFAULT_PROFILE
) -> RunConfig:
    """A :class:`RunConfig` from options (name -> value or None), then the environment, then the
    defaults (:data:`xattn_ref.options.RUN_OPTIONS`). ``flag_prefix`` names the options in
    errors (``--`` or ``--xattn-``)."""
    profile = _value(given, "profile", flag_prefix) or default_profile
    seed = _value(given, "seed", flag_prefix)
    seed_given = seed is not None
    if not seed_given:
        seed = 0 if profile in FIXED_SEED_PROFILES else random.randrange(2**32)
    database, source = pick(_BY_NAME["database"], given, flag_prefix)
    if database is not None and os.path.exists(database) and not os.path.isdir(database):
        raise UsageError(f"{source}: {database!r} exists and is not a directory")
    threads = _value(given, "threads", flag_prefix) or 1
    jobs = _value(given, "jobs", flag_prefix) or (os.cpu_count() or 1)
    max_examples = _value(given, "max_examples", flag_prefix)
    return RunConfig(profile, int(seed), seed_given, database, threads, jobs, max_examples)
