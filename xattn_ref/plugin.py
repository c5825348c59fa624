"""The pytest plugin (entry point ``pytest11``): choose the target, profile and seed.

    pytest properties --xattn-target mypkg.attn:attention
    XATTN_TARGET=mypkg.attn:attention pytest properties

Precedence: command line, then environment variable, then the built-in targets. Everything
heavy (torch, Hypothesis) is imported inside the hooks, so the plugin costs nothing to
projects that only have it installed.
"""

from __future__ import annotations

import os
import random
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from xattn_ref.runner import Result
    from xattn_ref.targets import Target

__all__ = ["XattnSession"]

OPT_TARGET = "xattn_target"
OPT_KIND = "xattn_kind"
OPT_DIM = "xattn_dim"
OPT_CONTEXT_DIM = "xattn_context_dim"
OPT_PROFILE = "xattn_profile"
OPT_SEED = "xattn_seed"
OPT_XFAIL = "xattn_xfail"

PROFILE_NAMES = ("dev", "ci", "thorough")  # xattn_ref.profiles.PROFILES, without importing it

ENV = {
    OPT_TARGET: "XATTN_TARGET",
    OPT_KIND: "XATTN_KIND",
    OPT_DIM: "XATTN_DIM",
    OPT_CONTEXT_DIM: "XATTN_CONTEXT_DIM",
    OPT_PROFILE: "XATTN_PROFILE",
    OPT_SEED: "XATTN_SEED",
    OPT_XFAIL: "XATTN_XFAIL",
}


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise pytest.UsageError(f"expected an integer, got {value!r}") from None


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("xattn_ref", "xattn_ref: masked-attention property suite")
    group.addoption(
        "--xattn-target",
        dest=OPT_TARGET,
        default=None,
        metavar="TARGET",
        help="attention under test, 'package.module:name' or 'file.py:name' "
        "('name()' calls a factory) [env XATTN_TARGET; default: the built-in targets]",
    )
    group.addoption(
        "--xattn-kind",
        dest=OPT_KIND,
        default=None,
        choices=("kernel", "layer"),
        help="kernel: fn(q, k, v, mask); layer: fn(x, context, context_mask) [env XATTN_KIND]",
    )
    group.addoption(
        "--xattn-dim",
        dest=OPT_DIM,
        default=None,
        metavar="E",
        help="model dim E of a layer target [env XATTN_DIM]",
    )
    group.addoption(
        "--xattn-context-dim",
        dest=OPT_CONTEXT_DIM,
        default=None,
        metavar="E_CTX",
        help="context dim of a layer target (default E) [env XATTN_CONTEXT_DIM]",
    )
    group.addoption(
        "--xattn-profile",
        dest=OPT_PROFILE,
        default=None,
        metavar="NAME",
        help="Hypothesis profile: dev, ci or thorough [env XATTN_PROFILE; default dev]",
    )
    group.addoption(
        "--xattn-seed",
        dest=OPT_SEED,
        default=None,
        metavar="N",
        help="seed for Hypothesis (ignored by the derandomized ci profile) [env XATTN_SEED]",
    )
    group.addoption(
        "--xattn-xfail",
        dest=OPT_XFAIL,
        default=None,
        metavar="FILE",
        help="file of expected failures, one per line: property, property[dtype-device] "
        "or part of a test id; '#' comments [env XATTN_XFAIL]",
    )


def _value(config: pytest.Config, name: str) -> tuple[str | None, str]:
    given = config.getoption(name)
    if given is not None:
        return str(given), "--" + name.replace("_", "-")
    env = os.environ.get(ENV[name])
    if env:
        return env, "$" + ENV[name]
    return None, "default"


class XattnSession:
    """Session state: the targets, profile, seed and xfail ids; runs and reports properties."""

    def __init__(self, config: pytest.Config) -> None:
        profile, source = _value(config, OPT_PROFILE)
        self.profile = profile or "dev"
        if self.profile not in PROFILE_NAMES:
            raise pytest.UsageError(
                f"{source}: unknown profile {self.profile!r}; expected one of {', '.join(PROFILE_NAMES)}"
            )
        seed, source = _value(config, OPT_SEED)
        try:
            self.seed = _int(seed) if seed is not None else random.randrange(2**32)
        except pytest.UsageError as exc:
            raise pytest.UsageError(f"{source}: {exc}") from None
        kind, _ = _value(config, OPT_KIND)
        self.kind = kind or "kernel"
        if self.kind not in ("kernel", "layer"):
            raise pytest.UsageError(f"$XATTN_KIND must be kernel or layer, got {self.kind!r}")
        self.layer_dims: tuple[int, int] | None = None
        if self.kind == "layer":
            dim, source = _value(config, OPT_DIM)
            if dim is None:
                raise pytest.UsageError("--xattn-dim (or $XATTN_DIM) is required with --xattn-kind layer")
            e = _int(dim)
            ctx, _ = _value(config, OPT_CONTEXT_DIM)
            self.layer_dims = (e, _int(ctx) if ctx is not None else e)
        self.target_spec, self.target_source = _value(config, OPT_TARGET)
        self._targets: list[Target] | None = None
        self.xfail: dict[str, str] = {}
        xfail, source = _value(config, OPT_XFAIL)
        if xfail is not None:
            self.xfail = _read_xfail(xfail, source)
        self.xfail_used: set[str] = set()

    @property
    def targets(self) -> list[Target]:
        """The targets, loaded (and torch imported) on first use."""
        if self._targets is None:
            from xattn_ref.targets import (
                BUILTIN_KERNELS,
                Target,
                TargetLoadError,
                builtin_layers,
                load_target,
            )

            if self.target_spec is not None:
                try:
                    self._targets = [load_target(self.target_spec, self.kind, self.layer_dims)]  # type: ignore[arg-type]
                except TargetLoadError as exc:
                    raise pytest.UsageError(f"{self.target_source}: {exc}") from None
            else:
                self._targets = [Target(name, fn) for name, fn in BUILTIN_KERNELS.items()] + builtin_layers()
        return self._targets

    def describe(self) -> str:
        names = self.target_spec or "the built-in targets"
        seed = "derandomized" if self.profile == "ci" else str(self.seed)
        return f"xattn_ref: targets {names} ({self.kind}); profile {self.profile}; seed {seed}"

    def run(self, target: Target, prop: str, dtype: Any, device: str) -> Result:
        """Run property ``prop`` (a name) on ``target`` for one dtype and device."""
        from xattn_ref.profiles import profile_settings
        from xattn_ref.runner import run_target

        overrides: dict[str, Any] = {}
        database = os.environ.get("XATTN_DATABASE")
        if database and self.profile != "ci":
            from hypothesis.database import DirectoryBasedExampleDatabase

            overrides["database"] = DirectoryBasedExampleDatabase(database)
        return run_target(
            target,
            prop,
            dtype=dtype,
            device=device,
            settings=profile_settings(self.profile, **overrides),
            seed=None if self.profile == "ci" else self.seed,
        )

    def report(self, target: Target, result: Result) -> None:
        """Turn a result into pytest's verdict: skip with the reason, or fail with the report."""
        __tracebackhide__ = True
        from xattn_ref._report import failure_report, target_args

        if result.status == "skipped":
            pytest.skip(result.message)
        if result.status in ("failed", "error"):
            extra = target_args(target)
            pytest.fail(failure_report(target.name, result, profile=self.profile, extra=extra), pytrace=False)


def _read_xfail(path: str, source: str) -> dict[str, str]:
    from xattn_ref._report import read_xfail

    try:
        return read_xfail(path)
    except OSError as exc:
        raise pytest.UsageError(f"{source}: cannot read xfail file {path!r}: {exc.strerror}") from None


_KEY = pytest.StashKey[XattnSession]()


def pytest_configure(config: pytest.Config) -> None:
    session = XattnSession(config)
    config.stash[_KEY] = session
    if session.target_spec is not None:
        session.targets  # noqa: B018  (load now: a bad target is a usage error, not a collection error)


def pytest_report_header(config: pytest.Config) -> str:
    return config.stash[_KEY].describe()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "xattn_target" in metafunc.fixturenames:
        session = metafunc.config.stash[_KEY]
        kind = getattr(metafunc.module, "XATTN_KIND", None)  # a suite module may declare its kind
        targets = [t for t in session.targets if kind is None or t.kind == kind]
        metafunc.parametrize("xattn_target", targets, ids=[t.name for t in targets])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    session = config.stash[_KEY]
    if not session.xfail:
        return
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        names = {item.nodeid}
        if "prop" in params:  # the CLI's ids too: property, property[dtype-device]
            dtype = str(params.get("dtype", "")).removeprefix("torch.")
            names |= {params["prop"], f"{params['prop']}[{dtype}-{params.get('device')}]"}
        for entry, reason in session.xfail.items():
            if entry in names or entry in item.nodeid:
                session.xfail_used.add(entry)
                item.add_marker(pytest.mark.xfail(reason=reason, strict=False))
    for entry in set(session.xfail) - session.xfail_used:
        item_warning = f"xattn_ref: xfail entry {entry!r} matches no test id"
        config.issue_config_time_warning(pytest.PytestConfigWarning(item_warning), stacklevel=2)


@pytest.fixture(scope="session")
def xattn_session(request: pytest.FixtureRequest) -> XattnSession:
    """The plugin's session state (targets, profile, seed); ``.run`` and ``.report`` properties."""
    return request.config.stash[_KEY]
