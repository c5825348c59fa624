"""A run's options, parsed and checked before torch loads: a misspelled option is answered at
once, in one line naming it. :func:`xattn_ref.plan.build` makes the checked options into a
plan; both front ends (``xattn-check`` and the pytest plugin) go through here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from xattn_ref.errors import UsageError
from xattn_ref.kinds import KINDS, check_property_names, resolve_options
from xattn_ref.options import RUN_OPTIONS, pick

__all__ = ["Request", "request"]


@dataclass(frozen=True)
class Request:
    """The options of a run, checked.

    - ``given``: the options as the front end parsed them (for the profile, seed and database);
    - ``prefix``: how the front end names its options in errors (``--`` or ``--xattn-``);
    - ``values``: each run option's value, parsed (None: not given), and ``sources``: where it
      came from (``--dtype``, ``$XATTN_DTYPE`` or ``default``);
    - ``kind``: the kind's name; ``options``: its options, resolved (None: the built-ins).
    """

    given: Mapping[str, Any]
    prefix: str
    values: dict[str, Any]
    sources: dict[str, str]
    kind: str
    options: dict[str, Any] | None

    @property
    def target(self) -> str | None:
        target: str | None = self.values["target"]
        return target


def request(given: Mapping[str, Any], *, prefix: str = "--") -> Request:
    """Parse and check ``given`` (option name -> value as a front end parsed it, or None: then
    the option's ``XATTN_*`` variable, then its default). Raises :class:`UsageError`."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for option in RUN_OPTIONS:
        value, sources[option.name] = pick(option, given, prefix)
        values[option.name] = None if value is None else option.parse(value, sources[option.name])
    check_property_names(values["property"], values["skip"], prefix)
    if values["target"] is None:
        if values["kind"] is not None:
            raise UsageError(f"{prefix}kind names the kind of a target; the built-in targets have theirs")
        return Request(given, prefix, values, sources, "kernel", None)
    kind = values["kind"] or "kernel"
    if kind not in KINDS:  # resolve_options says so in one line, with the closest name
        resolve_options(kind, {}, prefix)
    options = resolve_options(kind, {o.name: pick(o, given, prefix)[0] for o in KINDS[kind].options}, prefix)
    return Request(given, prefix, values, sources, kind, options)
