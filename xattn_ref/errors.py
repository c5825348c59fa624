"""Every public exception of xattn_ref.

- :class:`XattnArgumentError`: a bad argument to a public function (names it, says what was
  expected and what was given);
- :class:`TargetLoadError`: a target spec cannot be turned into a callable;
- :class:`TargetError`: the target misbehaved on a valid input (raised, or returned the wrong
  type, shape, dtype or device, or an output that is not differentiable);
- :class:`PropertyFailure`: a property does not hold on a case;
- :class:`UsageError`: bad options to ``xattn-check`` or the pytest plugin;
- :class:`Inexpressible`: a case cannot be said in a kernel's dialect (padding to a kernel
  that takes no mask); the property leaves that variant out.
- :class:`NotTaken`: raised by a target (or its adapter) for an input outside its documented
  limits (a fused backend that takes no float64, no mask or no such head dim); the example is
  left out, and a property that no example exercised is not-applicable, never passed.

Strategies raise Hypothesis's own ``InvalidArgument`` for bad arguments, as Hypothesis does.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "Inexpressible",
    "NotTaken",
    "PropertyFailure",
    "TargetError",
    "TargetLoadError",
    "UsageError",
    "XattnArgumentError",
]


class XattnArgumentError(ValueError):
    """A bad argument: the message names it, says what was expected and what was given."""


class TargetLoadError(Exception):
    """The target spec cannot be turned into a callable; the message says why, in one line."""


class TargetError(Exception):
    """The target misbehaved on a valid input: it raised, returned the wrong type, shape, dtype or
    device, or an output that is not differentiable. A finding, like a failed property."""


class Inexpressible(ValueError):
    """A case cannot be handed to a kernel in its dialect (a mask to a kernel that takes none)."""


class NotTaken(Exception):
    """Raise it from a target for an input outside its documented limits (not a bug: SDPA's flash
    backend takes no float64). The example is left out of the property and counted; a property
    that no example exercised is reported not-applicable with this message."""


class UsageError(Exception):
    """Bad options (command line, environment or plugin): one line naming the option."""


class PropertyFailure(AssertionError):
    """A property does not hold on a case. ``str()`` has the values and a reproduction.

    - ``prop``: the property's name;
    - ``case``: the case it failed on (``case.describe()``, ``case.snippet()``);
    - ``detail``: what broke, with the values;
    - ``root``: when the only evidence is a non-finite value, the property that reports it
      (``finite_output`` or ``finite_grad``): this failure follows from that one.
    """

    def __init__(self, prop: str, case: Any, message: str, *, root: str | None = None) -> None:
        self.prop = prop
        self.case = case
        self.detail = message
        self.root = root
        super().__init__(
            f"[{prop}] {message}\n  case: {case.describe()}\n  rebuild it:\n    "
            + case.snippet().replace("\n", "\n    ")
        )
