"""Validation of strategy arguments: ``InvalidArgument`` naming the argument and the value,
raised when the test runs (strategies are built lazily), as Hypothesis's own strategies do."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

__all__ = ["_check_choices", "_check_int", "_check_range", "_lazy"]

T = TypeVar("T")


def _lazy(build: Callable[[], st.SearchStrategy[T]]) -> st.SearchStrategy[T]:
    # Arguments are validated when the test runs, not when the module is imported.
    return st.deferred(build)


def _check_int(name: str, value: object, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument(f"{name} must be an int, but was {value!r}")
    if value < minimum:
        raise InvalidArgument(f"{name} must be at least {minimum}, but was {value!r}")
    return value


def _check_choices(name: str, values: object, allowed: Sequence[object]) -> tuple:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise InvalidArgument(f"{name} must be a non-empty sequence, but was {values!r}")
    if not values:
        raise InvalidArgument(f"{name} must not be empty")
    for value in values:
        if value not in allowed:
            raise InvalidArgument(f"{name} contains {value!r}; expected values from {tuple(allowed)!r}")
    return tuple(values)


def _check_range(low_name: str, low: int, high_name: str, high: int) -> None:
    if low > high:
        raise InvalidArgument(f"{low_name}={low} must be at most {high_name}={high}")
