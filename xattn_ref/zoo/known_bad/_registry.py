"""One registry of known-bad implementations: each is declared once, where it is written, with
the property that catches it (``@known_bad("finite_output", ...)``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar

__all__ = ["REGISTRY", "FiniteDefect", "KnownBad", "known_bad"]

F = TypeVar("F", bound=Callable[..., Any])


class FiniteDefect(NamedTuple):
    """Where a finite defect exists: its dtypes, the logit standard deviations at which it shows,
    and the inputs it needs beyond the defaults (keyword arguments of ``attention_cases``)."""

    dtypes: tuple[str, ...]
    stds: tuple[float, ...]
    inputs: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class KnownBad:
    """A known-bad implementation: the callable (a kernel, or a layer's factory), the property
    designed to catch it, the options it is run with (its dialect; ``kind`` when not a kernel),
    and for a finite defect where it shows."""

    name: str
    fn: Callable[..., Any]
    caught_by: str
    kind: str = "kernel"
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    finite: FiniteDefect | None = None


#: name -> its declaration, in the order they are written.
REGISTRY: dict[str, KnownBad] = {}


def known_bad(
    caught_by: str,
    *,
    kind: str = "kernel",
    options: Mapping[str, Any] | None = None,
    finite: FiniteDefect | None = None,
) -> Callable[[F], F]:
    """Register the decorated function as a known-bad implementation caught by ``caught_by``."""

    def register(fn: F) -> F:
        opts = dict(options or {})
        REGISTRY[fn.__name__] = KnownBad(
            fn.__name__, fn, caught_by, opts.pop("kind", kind), MappingProxyType(opts), finite
        )
        return fn

    return register
