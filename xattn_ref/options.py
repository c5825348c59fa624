"""Every option of a run, declared once: the one table that the CLI's flags (``--NAME``), the
pytest plugin's (``--xattn-NAME``) and the environment variables (``$XATTN_NAME``) are made from.

Precedence: the command line, then the environment, then the default; an error names where a
bad value came from (``--seed``, ``--xattn-seed`` or ``$XATTN_SEED``). Switches read ``1/0``,
``true/false``, ``yes/no``, ``on/off`` (any case) the same everywhere.

Nothing heavy is imported here: the CLI checks its arguments, and the plugin adds its options to
every project that has xattn_ref installed, before torch loads.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from xattn_ref.errors import UsageError

__all__ = [
    "DEFAULT_PROFILE",
    "DTYPE_NAMES",
    "DEVICE_NAMES",
    "FIXED_SEED_PROFILES",
    "RUN_OPTIONS",
    "Option",
    "OptionType",
    "did_you_mean",
    "parse_switch",
    "pick",
]

OptionType = Literal["int", "choice", "switch", "text", "list"]

_ON = ("1", "true", "yes", "on")
_OFF = ("0", "false", "no", "off", "")

#: The dtype and device names a run takes (checked here, before torch loads).
DTYPE_NAMES = ("float64", "float32", "float16", "bfloat16")
DEVICE_NAMES = ("cpu", "cuda", "mps")


def parse_switch(value: Any, source: str) -> bool:
    """A switch's value: on for ``True``, 1, true, yes, on (a flag given alone is ``True``);
    off for ``False``, ``None``, 0, false, no, off and the empty string. Anything else is a
    :class:`UsageError` naming ``source``."""
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).strip().lower()
    if text in _ON or text in _OFF:
        return text in _ON
    raise UsageError(f"{source} takes no value, or one of 1/0, true/false, yes/no, on/off; got {value!r}")


def did_you_mean(word: str, known: Sequence[str]) -> str:
    """``" (did you mean X?)"`` for the closest of ``known``, or ``""``."""
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


@dataclass(frozen=True)
class Option:
    """One option: ``--NAME`` in the CLI, ``--xattn-NAME`` in pytest, ``$XATTN_NAME``.

    - ``type``: ``int`` (at least ``minimum``), ``choice`` (one of ``choices``), ``switch``,
      ``text``, or ``list`` (a comma list, each item one of ``choices`` when they are given);
    - ``default``: the value when not given; ``default_from``: another option whose value is
      the default; ``required``: no default at all;
    - ``metavar``: how the CLI's help names the value.
    """

    name: str
    help: str
    type: OptionType = "int"
    choices: tuple[str, ...] = ()
    default: Any = None
    required: bool = False
    default_from: str | None = None
    minimum: int = 1
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def pytest_flag(self) -> str:
        return "--xattn-" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "XATTN_" + self.name.upper()

    def parse(self, value: Any, source: str) -> Any:
        """The value, checked; :class:`UsageError` with one line naming ``source``."""
        if self.type == "switch":
            return parse_switch(value, source)
        if self.type == "choice":
            if value not in self.choices:
                raise UsageError(
                    f"{source} must be one of {', '.join(self.choices)}, got {value!r}"
                    + did_you_mean(str(value), self.choices)
                )
            return value
        if self.type == "text":
            return str(value)
        if self.type == "list":
            items = list(value) if isinstance(value, (list, tuple)) else str(value).split(",")
            items = [str(v).strip() for v in items if str(v).strip()]
            for item in items:
                if self.choices and item not in self.choices:
                    raise UsageError(
                        f"{source}: unknown {self.name} {item!r}; expected one of {', '.join(self.choices)}"
                        + did_you_mean(item, self.choices)
                    )
            return items
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise UsageError(f"{source} must be an integer, got {value!r}") from None
        if number < self.minimum:
            raise UsageError(f"{source} must be at least {self.minimum}, got {number}")
        return number

    def cli_args(self, value: Any) -> list[str]:
        """The command-line arguments that give ``value`` (none for a default choice or switch).
        A value that begins with ``-`` is joined to its flag (``--sentinel=-1e4``), so the
        command runs as printed."""
        if self.type == "switch":
            return [self.flag] if value else []
        if self.type in ("choice", "text") and value == self.default:
            return []
        if isinstance(value, (list, tuple)):
            value = ",".join(map(str, value))
        text = str(value)
        return [f"{self.flag}={text}"] if text.startswith("-") else [self.flag, text]


def pick(option: Option, given: Mapping[str, Any], prefix: str = "--") -> tuple[Any, str]:
    """``(value, source)`` of ``option``: from ``given`` (name -> value or None, as a front end
    parsed it), else from its environment variable, else ``(None, "default")``."""
    value = given.get(option.name)
    if value is not None and value is not False and value != []:
        return value, prefix + option.name.replace("_", "-")
    env = os.environ.get(option.env)
    if env:
        return env, "$" + option.env
    return None, "default"


#: The profile a run takes unless one is named (the main job's is ``quick``).
DEFAULT_PROFILE = "dev"
#: Profiles whose seed is fixed (0) unless one is given (here, not in :mod:`xattn_ref.profiles`:
#: the plugin reads it without importing Hypothesis).
FIXED_SEED_PROFILES = frozenset({"ci"})

#: The options of a run, shared by both front ends (each kind's own options live with the kind,
#: :data:`xattn_ref.kinds.KINDS`, and are made into flags the same way).
RUN_OPTIONS: tuple[Option, ...] = (
    Option("target", "attention under test, 'package.module:name' or 'path/file.py:name'; 'name()' calls "
           "a factory", type="text"),
    Option("kind", "kind of target (default kernel; see xattn-check --list)", type="text"),
    Option("dtype", "comma list of dtypes (default all)", type="list", choices=DTYPE_NAMES,
           metavar="float64,float32,..."),
    Option("device", "comma list of devices (default all; absent ones are skipped)", type="list",
           choices=DEVICE_NAMES, metavar="cpu,cuda,mps"),
    Option("property", "only these properties (comma list)", type="list", metavar="P,..."),
    Option("skip", "skip these properties (comma list)", type="list", metavar="P,..."),
    Option("strict", "also run the opt-in properties (nan_padding_invariance)", type="switch", default=False),
    Option("profile", "Hypothesis profile: dev (default; quick for the built-ins), ci (seed 0, 30 "
           "examples), thorough or quick (10 examples)", type="choice",
           choices=("dev", "ci", "thorough", "quick"), default="dev"),
    Option("seed", "base seed (default random; 0 with the ci profile)", minimum=0),
    Option("max_examples", "examples per run (default: the profile's)"),
    Option("database", "directory that keeps failing examples and replays them", type="text"),
    Option("threads", "torch intra-op threads (default 1)"),
    Option("jobs", "parallel processes (default: the number of cores; the CLI only)"),
    Option("xfail", "file of expected failures: 'property' or 'property[dtype-device]', '#' comments",
           type="text"),
)  # fmt: skip
