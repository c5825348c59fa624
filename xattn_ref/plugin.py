"""The pytest plugin (entry point ``pytest11``): run the property suite against a target.

    pytest --pyargs xattn_ref.suite --xattn-target mypkg.attn:attention
    XATTN_TARGET=mypkg.attn:attention pytest --pyargs xattn_ref.suite -n auto

Options (command line first, then environment): ``--xattn-target`` ``$XATTN_TARGET``,
``--xattn-kind`` ``$XATTN_KIND``, each kind's options (``--xattn-dim`` ``$XATTN_DIM``, ...),
``--xattn-profile``, ``--xattn-seed``, ``--xattn-database``, ``--xattn-threads``,
``--xattn-xfail`` (``$XATTN_PROFILE`` ...). Inert in projects that do not use it: nothing is
read, printed or imported (torch, Hypothesis) unless an ``--xattn-*`` option is given or the
suite is collected. Under pytest-xdist the controller's seed goes to every worker.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from xattn_ref.errors import NotTaken, UsageError
from xattn_ref.kinds import KINDS
from xattn_ref.options import FIXED_SEED_PROFILES, RUN_OPTIONS, Option, pick
from xattn_ref.request import request

if TYPE_CHECKING:
    from xattn_ref._property import Property
    from xattn_ref.config import RunConfig
    from xattn_ref.runner import Result
    from xattn_ref.targets import Target

__all__ = ["XattnRun", "XattnState"]

PREFIX = "--xattn-"


def _options() -> dict[str, Option]:
    """The plugin's options: the run's (:data:`xattn_ref.options.RUN_OPTIONS`, but ``jobs``:
    pytest-xdist's ``-n`` parallelizes here) and every kind's, each declared once."""
    table = {o.name: o for o in RUN_OPTIONS if o.name != "jobs"}
    for kind in KINDS.values():
        for o in kind.options:
            table.setdefault(o.name, dataclasses.replace(o, help=f"{o.help} [{kind.name}]"))
    return table


OPTIONS = _options()


def _dest(name: str) -> str:
    return f"xattn_{name}"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("xattn_ref", "xattn_ref: masked-attention property suite")
    for name, option in OPTIONS.items():
        extra: dict[str, Any] = {"nargs": "?", "const": "1"} if option.type == "switch" else {}
        group.addoption(
            option.pytest_flag,
            dest=_dest(name),
            default=None,
            help=f"{option.help} [env {option.env}]",
            **extra,
        )


def _given(config: pytest.Config) -> dict[str, Any]:
    return {name: config.getoption(_dest(name)) for name in OPTIONS}


def _value(config: pytest.Config, name: str) -> tuple[Any, str]:
    """``(value, source)``: the command line, then the environment (unparsed), or None."""
    return pick(OPTIONS[name], _given(config), PREFIX)


@dataclass
class XattnRun:
    """One property × dtype × device of one target: ``check()`` runs it and turns the result
    into pytest's verdict (pass, fail with the report, skip with the reason)."""

    state: XattnState
    target: Target
    property: str
    dtype: Any
    device: str

    def example(self, data: Any, prop: Property) -> None:
        """One case of this run's kind, drawn from ``data``, and ``prop`` (the property test's
        own) checked on it (what HypoFuzz drives); a case the target does not take is rejected."""
        from hypothesis import reject

        case = data.draw(self.target.kind.cases(self.target.options, self.dtype, self.device))
        try:
            prop.check(self.target.call, case)
        except NotTaken:
            reject()

    def database_key(self, test: Any, nodeid: str) -> bytes | None:
        """The key of this run's examples: the property test's own, with the node id, as HypoFuzz
        keys the test it fuzzes (``hypothesis fuzz``), so a campaign's failures replay first."""
        from hypothesis.internal.reflection import function_digest

        inner = getattr(getattr(test, "hypothesis", None), "inner_test", None)
        if inner is None:
            return None
        inner._hypothesis_internal_add_digest = nodeid.encode()
        return function_digest(inner)

    def check(self, database_key: bytes | None = None) -> None:
        __tracebackhide__ = True
        from hypothesis import settings

        from xattn_ref.report import failure_report
        from xattn_ref.runner import run_property

        # --xattn-database when given (Hypothesis's CI profile keeps no database), else the default
        database = self.state.config.example_database() or settings().database
        result = run_property(
            self.target,
            self.property,
            dtype=self.dtype,
            device=self.device,
            settings=self.state.config.settings(),
            seed=self.state.config.seed,
            database=database if database_key else self.state.config.example_database(),
            database_key=database_key,
            shrink_errors=True,
        )
        self.state.record(result)
        if not result.tested:
            pytest.skip(f"{result.status}: {result.message}")
        if result.status in ("failed", "error"):
            root = self.state.failed_root(result)
            if root is not None:
                pytest.fail(
                    f"{result.message} (follows from {root}, which failed on the same run)", pytrace=False
                )
            saved = (
                f"(the example database held {result.saved} example(s) saved for this test, by a fuzzing "
                "campaign or an earlier run: they were replayed first)\n"
                if result.saved
                else ""
            )
            pytest.fail(saved + failure_report(self.target, result, self.state.config), pytrace=False)


class XattnState:
    """Session state: the configuration, the targets and the xfail entries, resolved once."""

    def __init__(self, config: pytest.Config) -> None:
        from xattn_ref import plan

        given = _given(config)
        worker_seed = getattr(config, "workerinput", {}).get("xattn_seed")
        if worker_seed is not None:
            given["seed"] = worker_seed
        try:
            self.plan = plan.build(request(given, prefix=PREFIX), default_profile="dev")
        except UsageError as exc:
            raise pytest.UsageError(f"xattn_ref: {exc}") from None
        self.config: RunConfig = self.plan.config
        # the built-ins that should pass (a suite gates correct code; xattn-check shows the rest)
        expected = self.plan.expected
        self.targets: list[Target] = [t for t in self.plan.targets if expected is None or expected[t.name]]
        self.spec = "the built-in correct targets" if expected is not None else self.plan.spec
        self.xfail = self.plan.xfail
        self.results: list[Result] = []
        self.xfail_used: set[str] = set()
        self.absent_shown = False

    def describe(self) -> str:
        notes = "".join(f"; {n}" for n in (*self.plan.notes(), *self.plan.absent))
        return f"xattn_ref: targets {self.spec}; {self.config.describe(jobs=False)}{notes}"

    def runs(self) -> list[tuple[Target, str, Any, str]]:
        """Every target × property × dtype × device that can run here; devices that are absent
        are left out (the header says so once, and one skipped test gives the reason)."""
        return [
            (t, p, dtype, device)
            for t in self.targets
            for p in self.plan.properties[t.name]
            for dtype in self.plan.dtypes
            for device in self.plan.present
        ]

    def absent(self) -> list[str]:
        """Why each requested device that is absent here cannot run."""
        return list(self.plan.absent)

    def record(self, result: Result) -> None:
        self.results.append(result)

    def failed_root(self, result: Result) -> str | None:
        if result.root is None:
            return None
        same = (result.target, result.root, result.dtype, result.device)
        failed = any(
            (r.target, r.property, r.dtype, r.device) == same and r.status == "failed" for r in self.results
        )
        return result.root if failed else None


_KEY = pytest.StashKey[XattnState]()
_ACTIVE = pytest.StashKey[bool]()


def _state(config: pytest.Config) -> XattnState:
    if _KEY not in config.stash:
        config.stash[_KEY] = XattnState(config)
    return config.stash[_KEY]


def pytest_configure(config: pytest.Config) -> None:
    active = any(v is not None for v in _given(config).values())
    config.stash[_ACTIVE] = active
    if active:
        _state(config)  # a bad option or target is a usage error now, not a collection error
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(), "xattn_ref.xdist")


class _XdistHooks:
    """Hands the controller's seed to every pytest-xdist worker (as pytest-randomly does), so
    that every worker draws the same examples for the same run."""

    def pytest_configure_node(self, node: Any) -> None:
        config = node.config
        if _KEY in config.stash or config.stash.get(_ACTIVE, False):
            node.workerinput["xattn_seed"] = _state(config).config.seed
        elif os.environ.get("XATTN_SEED") is None and _value(config, "profile")[0] not in FIXED_SEED_PROFILES:
            # the workers may collect the suite later: a random seed, one for all of them (a
            # fixed-seed profile, such as ci from the environment, resolves the same in each)
            import random

            node.workerinput["xattn_seed"] = config.stash.setdefault(_SEED, random.randrange(2**32))


_SEED = pytest.StashKey[int]()


def pytest_report_header(config: pytest.Config) -> str | None:
    return _state(config).describe() if config.stash.get(_ACTIVE, False) else None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "xattn_run" not in metafunc.fixturenames:
        return
    state = _state(metafunc.config)
    from xattn_ref._devices import dtype_name

    prop = getattr(metafunc.function, "xattn_property", None)  # the property test's Property
    runs = [run for run in state.runs() if prop is None or run[1] == prop.name]
    params: list[Any] = [XattnRun(state, *run) for run in runs]
    ids = [f"{t.name}-{dtype_name(dt)}-{dev}" if prop else f"{t.name}-{p}-{dtype_name(dt)}-{dev}"
           for t, p, dt, dev in runs]  # fmt: skip
    absent = state.absent()
    if absent and not state.absent_shown and not metafunc.config.option.collectonly:
        state.absent_shown = True  # one skipped test says why, not one per property and dtype
        params.append(_Absent("; ".join(absent)))
        ids.append("absent-devices")
    if not params:  # the property is not selected for any target: deselected, not skipped
        params, ids = [_Absent("not selected", deselect=True)], ["not-selected"]
    metafunc.parametrize("xattn_run", params, ids=ids)


def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """A property test of the suite runs through the runner (a verdict per target, dtype and
    device: the minimal case, n/a, the root cause, the reproduce command), under the test's own
    database key; its Hypothesis body is what HypoFuzz drives (``hypothesis fuzz``) under that
    key, so what a campaign saved replays first."""
    run = pyfuncitem.funcargs.get("xattn_run")
    if not isinstance(run, (XattnRun, _Absent)):
        return None
    __tracebackhide__ = True
    run.check(run.database_key(pyfuncitem.obj, pyfuncitem.nodeid) if isinstance(run, XattnRun) else None)
    return True


def _run_of(item: pytest.Item) -> Any:
    return getattr(getattr(item, "callspec", None), "params", {}).get("xattn_run")


@dataclass
class _Absent:
    """A test that cannot run here (a device absent, a property no target has), as one skip
    with the reason."""

    reason: str
    deselect: bool = False

    def check(self, database_key: bytes | None = None) -> None:
        pytest.skip(self.reason)

    def example(self, data: Any, prop: Property) -> None:
        from hypothesis import reject

        reject()  # nothing to fuzz here


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _KEY not in config.stash:
        return
    state = config.stash[_KEY]
    from xattn_ref._devices import dtype_name
    from xattn_ref.report import xfail_reason

    unselected = [i for i in items if getattr(_run_of(i), "deselect", False)]
    if unselected:
        config.hook.pytest_deselected(items=unselected)
        items[:] = [i for i in items if i not in unselected]

    from hypothesis import settings

    for item in items:
        run = _run_of(item)
        if not isinstance(run, XattnRun):
            continue
        # a property test is made when xattn_ref.checks is first imported, perhaps before this
        # session loaded its Hypothesis profile: the profile of the session, as for any test
        item.obj._hypothesis_internal_use_settings = settings.default  # type: ignore[attr-defined]
        match = xfail_reason(state.xfail, run.property, dtype_name(run.dtype), run.device)
        if match is not None:
            state.xfail_used.add(match[0])
            item.add_marker(pytest.mark.xfail(reason=match[1], strict=False))
    for entry in set(state.xfail) - state.xfail_used:
        config.issue_config_time_warning(
            pytest.PytestConfigWarning(f"xattn_ref: xfail entry {entry!r} matches no test"), stacklevel=2
        )
    if not config.stash.get(_ACTIVE, False):
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(state.describe())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    state = config.stash.get(_KEY, None)
    if state is None or any(r.tested for r in state.results) or hasattr(config, "workerinput"):
        return
    if config.option.collectonly:
        return  # nothing runs when only collecting
    if config.pluginmanager.has_plugin("dsession") or exitstatus not in (0, 5):
        return  # under pytest-xdist the workers ran the tests; a failed session is not green anyway
    reasons = "; ".join(dict.fromkeys([*(r.message for r in state.results), *state.absent()]))
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"xattn_ref: nothing was tested: {reasons or 'no run was selected'}", red=True)
    session.exitstatus = pytest.ExitCode.NO_TESTS_COLLECTED


@pytest.fixture(scope="session")
def xattn_state(request: pytest.FixtureRequest) -> XattnState:
    """The plugin's session state (configuration, targets, results so far)."""
    return _state(request.config)
