"""Run properties on targets with Hypothesis: one property × dtype × device at a time, or a
whole plan, serially or in parallel processes. The CLI, the pytest plugin and the suite all go
through :func:`run_property`, so they run the same checks with the same strategies, seeds and
example database.

Statuses (:data:`Status`):

- ``passed``: every drawn example held, and at least one exercised the property;
- ``failed``: a property does not hold; the minimal case and the message say how;
- ``error``: the target misbehaved on a valid input (raised, wrong type, shape, dtype or
  device, not differentiable): a finding, reported like a failure;
- ``skipped``: the device or dtype is not available here (the reason says why);
- ``not-applicable``: the property cannot apply here (device_consistency on the CPU,
  dtype_consistency in float64), or no drawn example exercised it.

Seeds: every run draws from its own seed, derived from the base seed and the run's key (target,
property, dtype, device), so runs are independent: the same verdicts and minimal examples
serially and in parallel, and ``xattn-check ... --property P --dtype D --device C --seed S``
replays exactly one of them.
"""

from __future__ import annotations

import builtins
import copy
import dataclasses
import hashlib
import multiprocessing
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
from hypothesis import Verbosity, given
from hypothesis import seed as hypothesis_seed
from hypothesis import settings as Settings
from hypothesis.database import ExampleDatabase
from hypothesis.errors import FlakyFailure, FlakyReplay, HypothesisException

from xattn_ref._devices import dtype_name, unavailable_reason
from xattn_ref.checks import PROPERTIES
from xattn_ref.errors import NotTaken, PropertyFailure, TargetError
from xattn_ref.kinds.callmap import CallMap
from xattn_ref.precision import Notes, collected
from xattn_ref.targets import load_target

__all__ = ["KeyedDatabase", "Result", "Status", "Task", "run_property", "run_seed", "run_tasks"]

Status = Literal["passed", "failed", "error", "skipped", "not-applicable"]


@dataclass
class Result:
    """The verdict of one property × dtype × device run on one target."""

    target: str
    property: str
    dtype: str
    device: str
    status: Status
    examples: int = 0
    applied: int = 0
    message: str = ""
    case: str | None = None  # the minimal case in words
    snippet: str | None = None  # Python that rebuilds it
    how: str | None = None  # Python that calls the target ``fn`` on it in its dialect (no --call or --select)
    hint: str | None = None  # what else the failure suggests (the minimal case holds with the mask inverted)
    root: str | None = None  # the property this failure follows from (a non-finite value)
    shrunk: bool = True
    elapsed: float = 0.0
    saved: int = 0  # examples the database held for this run's key before it ran (replayed first)
    notes: Notes = ()  # information the run gathered (a float64 run's own precision): precision.summarize

    @builtins.property
    def tested(self) -> bool:
        """Whether anything was tested: passed, failed or error."""
        return self.status in ("passed", "failed", "error")

    @builtins.property
    def id(self) -> str:
        """``property[dtype-device]``, the id that xfail files and pytest use."""
        return f"{self.property}[{self.dtype}-{self.device}]"


def run_seed(base: int, *key: str) -> int:
    """The seed of one run: a stable hash of the base seed and the run's key."""
    digest = hashlib.sha256(":".join((str(base), *key)).encode()).digest()
    return int.from_bytes(digest[:8], "big")


class KeyedDatabase(ExampleDatabase):
    """An example database whose keys are prefixed with one run's key (target, property, dtype,
    device), so runs never replay each other's examples."""

    def __init__(self, inner: ExampleDatabase, prefix: str) -> None:
        super().__init__()
        self.inner = inner
        self.prefix = prefix.encode() + b"|"

    def save(self, key: bytes, value: bytes) -> None:
        self.inner.save(self.prefix + key, value)

    def fetch(self, key: bytes) -> Iterable[bytes]:
        return self.inner.fetch(self.prefix + key)

    def delete(self, key: bytes, value: bytes) -> None:
        self.inner.delete(self.prefix + key, value)

    def move(self, src: bytes, dest: bytes, value: bytes) -> None:
        self.inner.move(self.prefix + src, self.prefix + dest, value)


class _Stop(BaseException):
    """Ends a run at the first target error, without shrinking (Hypothesis lets a
    ``BaseException`` through at once)."""

    def __init__(self, error: TargetError, case: Any) -> None:
        super().__init__(str(error))
        self.error, self.case = error, case


def run_property(
    target: Any,
    prop: str,
    *,
    dtype: torch.dtype,
    device: str,
    settings: Settings,
    seed: int = 0,
    database: ExampleDatabase | None = None,
    shrink_errors: bool = False,
    cases: Any = None,
    database_key: bytes | None = None,
) -> Result:
    """Run property ``prop`` on a :class:`xattn_ref.targets.Target` for one dtype and device.

    ``seed`` is the base seed (the run draws from :func:`run_seed`); ``database`` keeps failing
    examples and replays them (keyed per run). A target error ends the run at once, unshrunk,
    unless ``shrink_errors``. ``cases``: a strategy to draw from instead of the kind's own.
    ``database_key``: the key of the property's own test in ``database`` (the pytest plugin's:
    the one HypoFuzz saves under), instead of a key of this run's in a database of its own.
    """
    start = time.perf_counter()
    name = dtype_name(dtype)
    result = Result(target.name, prop, name, device, "passed")
    reason = unavailable_reason(device, dtype) or getattr(target, "unusable", {}).get(name)
    prop_ = PROPERTIES[prop]
    if reason is None and prop_.not_applicable(dtype, device) is not None:
        result.status, result.message = "not-applicable", str(prop_.not_applicable(dtype, device))
        return result
    if reason is not None:
        result.status, result.message = "skipped", reason
        return result

    call = target.call
    if prop_.gradients and not call.differentiable:
        result.status, result.message = "skipped", "not differentiable: the target is declared forward-only"
        return result
    counts = {"examples": 0, "applied": 0, "not_taken": 0}
    last: list[Any] = [None]
    not_taken: list[str] = []  # why the target left the first one out

    def check(case: Any) -> None:
        counts["examples"] += 1
        last[0] = case
        try:
            applied = prop_.check(call, case)
        except PropertyFailure:
            counts["applied"] += 1
            raise
        except TargetError as exc:
            if not shrink_errors:
                raise _Stop(exc, case) from exc
            raise
        except NotTaken as exc:  # outside the target's documented limits: not exercised
            counts["not_taken"] += 1
            if not not_taken:
                not_taken.append(str(exc).splitlines()[0] if str(exc) else "NotTaken")
            return
        counts["applied"] += bool(applied)

    key = (target.name, prop, name, device)
    strategy = target.kind.cases(target.options, dtype, device) if cases is None else cases
    test: Callable[[], None] = given(strategy)(check)  # type: ignore[no-untyped-call]
    # Hypothesis keys its example database by a digest of the test's source, which it reads from
    # the file at every run (2 ms); ``check`` is the same code in every run, so the same digest
    test._hypothesis_internal_database_key = database_key or _database_key(check)  # type: ignore[attr-defined]
    test = hypothesis_seed(run_seed(seed, *key))(test)
    db: ExampleDatabase | None
    if database_key is None:
        db = None if database is None else KeyedDatabase(database, "|".join(key))
    else:  # the property test's own key: what a fuzzing campaign saved replays first
        db = database
        result.saved = 0 if db is None else sum(1 for _ in db.fetch(database_key))
    test = Settings(settings, database=db, verbosity=Verbosity.quiet)(test)  # after seed: keeps the db
    try:
        with collected() as notes:
            try:
                test()
            finally:
                result.notes = tuple(notes)
    except PropertyFailure as exc:
        result.status, result.message, result.root = "failed", exc.detail, exc.root
        _record_case(result, exc.case, call)
        result.hint = _inverted_mask_hint(target, prop_, call, exc.case)
    except _Stop as stop:
        result.status, result.message, result.shrunk = "error", str(stop.error), False
        _record_case(result, stop.case, call)
    except TargetError as exc:
        result.status, result.message = "error", str(exc)
        _record_case(result, last[0], call)
    except (FlakyFailure, FlakyReplay) as exc:
        raised = [e for e in getattr(exc, "exceptions", ()) if isinstance(e, (TargetError, _Stop))]
        if raised:  # the target's own error, whatever made it not happen again on the replay
            error = raised[0].error if isinstance(raised[0], _Stop) else raised[0]
            result.status, result.shrunk = "error", False
            result.message = (
                f"{error} (it did not raise again when the same input was replayed: the error depends "
                "on earlier calls, as compiled code, a cache or global state can make it)"
            )
        else:
            result.status = "failed"
            result.message = (
                "the target gave different verdicts on the same input (non-deterministic): "
                + (str(exc).splitlines()[0])
            )
        _record_case(result, last[0], call)
    except HypothesisException as exc:
        result.status, result.message = "error", f"{type(exc).__name__}: {exc}".splitlines()[0]
    result.examples, result.applied = counts["examples"], counts["applied"]
    left_out = (
        f"; the target did not take {counts['not_taken']} of them ({not_taken[0]})" if not_taken else ""
    )
    if result.status == "passed" and result.applied == 0:
        result.status = "not-applicable"
        result.message = f"none of the {result.examples} drawn examples exercised it{left_out}"
    elif result.status == "passed" and not_taken:
        result.message = f"{result.applied} of {result.examples} drawn examples exercised it{left_out}"
    result.elapsed = time.perf_counter() - start
    return result


_DIGESTS: dict[Any, bytes] = {}


def _database_key(check: Callable[..., Any]) -> bytes:
    """What Hypothesis keys ``check``'s examples by (``function_digest``: its source and
    signature), read once per code object."""
    from hypothesis.internal.reflection import function_digest

    code = check.__code__
    if code not in _DIGESTS:
        _DIGESTS[code] = function_digest(check)
    return _DIGESTS[code]


def _inverted_mask_hint(target: Any, prop: Any, call: Any, case: Any) -> str | None:
    """A hint when the minimal case holds with every bool mask inverted (True = padding): the
    target may take the other convention, which ``--call`` declares."""
    roles = target.kind.roles
    if call.callmap is not None or case is None or not any("mask" in r for r in roles):
        return None
    try:
        args, _ = call.arguments(case)
        masks = [r for r in roles if "mask" in r and getattr(args.get(r), "dtype", None) == torch.bool]
        # a failure only where a row allows no key is the padding class itself, not a convention
        if not masks or not all(bool(args[r].any(-1).all()) for r in masks):
            return None
        text = ", ".join(f"~{r}" if r in masks else r for r in roles if r in args)
        inverted = copy.copy(call)
        inverted.callmap = CallMap.parse(text, tuple(r for r in roles if r in args))
        if not prop.check(inverted, case):
            return None
    except Exception:  # any failure with the mask inverted: no hint
        return None
    return (
        f"the minimal case holds with the mask inverted: if the target takes True = padding, "
        f"say so with --call '{text}'"
    )


def _record_case(result: Result, case: Any, call: Any) -> None:
    if case is not None:
        result.case, result.snippet = case.describe() + call.describe(case), case.snippet()
        plain = getattr(call, "callmap", None) is None and getattr(call, "select", None) is None
        how = call.snippet() if hasattr(call, "snippet") and plain else ""
        result.how = how or None


@dataclass(frozen=True)
class Task:
    """One run of a plan: a target (by index), a property, a dtype and a device."""

    target: int
    property: str
    dtype: torch.dtype
    device: str


# The plan of a parallel run, inherited by forked workers (targets need not be picklable).
_SHARED: dict[str, Any] = {}


def _work(index: int) -> tuple[int, Result]:
    targets, tasks, options = _SHARED["targets"], _SHARED["tasks"], _SHARED["options"]
    task = tasks[index]
    return index, run_property(
        targets[task.target], task.property, dtype=task.dtype, device=task.device, **options
    )


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def _can_fork() -> bool:
    if "fork" not in multiprocessing.get_all_start_methods() or sys.platform == "darwin":
        return False
    return not (torch.cuda.is_available() and torch.cuda.is_initialized())  # type: ignore[no-untyped-call]


def _reloadable(target: Any) -> tuple[str, str, str | None, dict[str, Any]] | None:
    """What a spawned process needs to load ``target`` again by its spec (None: held in-process
    only, as :func:`xattn_ref.targets.as_target` makes them)."""
    if ":" not in (target.spec or target.name):
        return None
    return target.name, target.kind.name, target.spec, dict(target.options)


def _init_spawned(
    threads: int, entries: list[tuple[str, str, str | None, dict[str, Any]]], tasks: list[Task], options: Any
) -> None:
    _init_worker(threads)
    targets = [
        dataclasses.replace(load_target(spec or name, kind, opts), name=name, spec=spec)
        for name, kind, spec, opts in entries
    ]
    _SHARED.update(targets=targets, tasks=tasks, options=options)


def _start_method(targets: list[Any]) -> str | None:
    """``fork`` where it is safe (no initialised CUDA context, not macOS); else ``spawn`` when
    every target can be loaded again by its spec; else None (serial)."""
    if _can_fork():
        return "fork"
    if "spawn" in multiprocessing.get_all_start_methods() and all(_reloadable(t) for t in targets):
        return "spawn"
    return None


def run_tasks(
    targets: list[Any],
    tasks: list[Task],
    *,
    settings: Settings,
    seed: int,
    database: ExampleDatabase | None = None,
    jobs: int = 1,
    threads: int = 1,
    on_result: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Run every task; results in task order. ``jobs > 1`` runs them in forked processes, or
    where fork is unsafe (an initialised CUDA context, macOS) in spawned ones that load the
    targets again by their specs (so a target's module sets what it needs, e.g. the float32
    matmul precision, there too); targets held in-process only then run serially. The first
    target error of each target is then run again with shrinking, so it is reported with its
    minimal case."""
    options: dict[str, Any] = {"settings": settings, "seed": seed, "database": database}
    results: list[Result | None] = [None] * len(tasks)
    for index, result in _execute(targets, tasks, options, jobs, threads):
        results[index] = result
        if on_result is not None:
            on_result(result)
    done = [r for r in results if r is not None]
    for t, target in enumerate(targets):  # one shrink per target, for its first error
        first = next(
            (i for i, (task, r) in enumerate(zip(tasks, done)) if task.target == t and r.status == "error"),
            None,
        )
        if first is not None and not done[first].shrunk:
            task = tasks[first]
            done[first] = run_property(
                target, task.property, dtype=task.dtype, device=task.device, shrink_errors=True, **options
            )
    return done


def _execute(
    targets: list[Any], tasks: list[Task], options: dict[str, Any], jobs: int, threads: int
) -> Iterator[tuple[int, Result]]:
    method = _start_method(targets) if jobs > 1 and len(tasks) > 1 else None
    if method is None:
        for i, task in enumerate(tasks):
            yield (
                i,
                run_property(
                    targets[task.target], task.property, dtype=task.dtype, device=task.device, **options
                ),
            )
        return
    ctx = multiprocessing.get_context(method)
    if method == "fork":
        _SHARED.update(targets=targets, tasks=tasks, options=options)
        init: tuple[Callable[..., None], tuple[Any, ...]] = (_init_worker, (threads,))
    else:
        entries = [_reloadable(t) for t in targets]
        init = (_init_spawned, (threads, entries, tasks, options))
    try:
        with ctx.Pool(min(jobs, len(tasks)), initializer=init[0], initargs=init[1]) as pool:
            yield from pool.imap_unordered(_work, range(len(tasks)))
    finally:
        _SHARED.clear()
