"""What a property is: a check stated once (in ``properties/``, shipped as
:mod:`xattn_ref.suite`), with its test.

A property file states each property as a function decorated with :func:`stated`::

    @stated(opt_in=True)
    def nan_padding_invariance(call: Call, case: Case) -> bool:
        \"\"\"NaN and inf stored at keys no query may attend to change nothing.\"\"\"
        ...

    test_nan_padding_invariance = nan_padding_invariance.test

The function takes a *call* (a target bound to its kind) and a case. It returns True when the
case exercised the property, False when it did not apply (no empty row, one batch element,
...); it raises :class:`~xattn_ref.errors.PropertyFailure` when the property does not hold.
``.test`` is its one Hypothesis test, which the pytest plugin parametrizes over target × dtype ×
device and which HypoFuzz fuzzes; the runner, the CLI and :func:`xattn_ref.checks.check` reach
the same object.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Property", "not_cpu", "not_float64", "stated"]


def not_float64(dtype: torch.dtype, device: str) -> str | None:
    """Why a comparison of a lower precision with float64 cannot apply to a float64 run."""
    if dtype == torch.float64:
        return "compares a lower precision with float64; this run is float64"
    return None


def not_cpu(dtype: torch.dtype, device: str) -> str | None:
    """Why a comparison of an accelerator with the CPU cannot apply to a CPU run."""
    if torch.device(device).type == "cpu":
        return "compares an accelerator with the CPU; this run is on the CPU"
    return None


def _always(dtype: torch.dtype, device: str) -> str | None:
    return None


@dataclass(frozen=True)
class Property:
    """A property: its name, its check (the decorated function) and how it runs.

    - ``gradients``: the check is about gradients only (skipped for forward-only targets; the
      others run their forward half for them);
    - ``not_applicable``: why the property cannot apply to a dtype and device at all (then it
      is not run), or None;
    - ``opt_in``: run only when asked for (``--strict``, or by name).

    Calling a property checks it: ``finite_output(call, case)``.
    """

    name: str
    check: Callable[[Any, Any], bool]
    gradients: bool = False
    not_applicable: Callable[[torch.dtype, str], str | None] = _always
    opt_in: bool = False
    test: Any = field(default=None, compare=False, repr=False)

    def __call__(self, call: Any, case: Any) -> bool:
        __tracebackhide__ = True
        return self.check(call, case)

    @property
    def summary(self) -> str:
        """The first paragraph of the statement (the check's docstring), on one line."""
        doc = self.check.__doc__ or ""
        return " ".join(doc.split("\n\n")[0].split())


def _test_of(prop: Property) -> Any:
    """The property's Hypothesis test: it draws one case of the run the pytest plugin gives it
    (target × dtype × device) and checks the property on it. Under ``pytest`` the plugin runs
    it through the runner instead (a verdict with the minimal case); HypoFuzz fuzzes this body."""
    from hypothesis import given
    from hypothesis import strategies as st

    def test(xattn_run: Any, data: st.DataObject) -> None:
        xattn_run.example(data, prop)

    test.__name__ = test.__qualname__ = f"test_{prop.name}"
    test.__doc__ = prop.check.__doc__
    test.__module__ = prop.check.__module__
    wrapped = given(data=st.data())(test)
    wrapped.xattn_property = prop  # type: ignore[attr-defined]
    return wrapped


def stated(
    *,
    gradients: bool = False,
    not_applicable: Callable[[torch.dtype, str], str | None] = _always,
    opt_in: bool = False,
) -> Callable[[Callable[[Any, Any], bool]], Property]:
    """Declare the decorated check a property named after it (see :class:`Property` for the
    arguments); its test is ``.test``."""

    def declare(check: Callable[[Any, Any], bool]) -> Property:
        prop = Property(check.__name__, check, gradients, not_applicable, opt_in)
        object.__setattr__(prop, "test", _test_of(prop))
        return prop

    return declare
