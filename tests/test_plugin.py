"""The pytest plugin, driven through pytester: ``pytest --pyargs xattn_ref.suite``, in-process (a
subprocess per run would import torch again, seconds each)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _support import without_xattn_environment

pytest_plugins = ["pytester"]

SUITE = ["--pyargs", "xattn_ref.suite", "-p", "no:cacheprovider"]
TARGETS = Path(__file__).parent / "targets" / "bad_targets.py"


@pytest.fixture
def run(inprocess_pytest, monkeypatch):
    without_xattn_environment(monkeypatch)
    return lambda *args: inprocess_pytest(*SUITE, *args)


def test_header_names_target_profile_and_seed(run):
    result = run("--xattn-target", "xattn_ref.zoo.kernels:sdpa_kernel", "--xattn-seed", "7", "--co")
    header = "xattn_ref: targets xattn_ref.zoo.kernels:sdpa_kernel (kernel: fn(q, k, v, mask)*; profile dev*seed 7*"  # noqa: E501
    result.stdout.fnmatch_lines([header])


def test_dialect_options_come_from_the_command_line_or_the_environment(run, monkeypatch):
    monkeypatch.setenv("XATTN_HEADS", "gqa")
    result = run("--xattn-target", "xattn_ref.zoo.kernels:sdpa_gqa_kernel", "--xattn-mask", "additive",
                 "--xattn-bias", "--xattn-profile", "ci", "--xattn-dtype", "float32")  # fmt: skip
    result.stdout.fnmatch_lines(["*k, v with H_kv heads*0 = attend, -inf = masked, finite biases*"])
    # skipped: device_consistency (n/a on the CPU), absent devices; deselected:
    # nan_padding_invariance (opt-in) and the three properties of models alone
    result.assert_outcomes(passed=9, skipped=2, deselected=4)
    bad = run("--xattn-target", "xattn_ref.zoo.kernels:sdpa_gqa_kernel", "--xattn-bias")
    bad.stderr.fnmatch_lines(["*xattn_ref: kernel options: bias needs a float mask*"])


def test_a_bad_target_fails_with_the_report(run):
    result = run(
        "--xattn-target",
        "xattn_ref.zoo.known_bad:neg_inf_softmax",
        "--xattn-profile",
        "ci",
        "-k",
        "finite_output and float32 and cpu",
    )
    assert result.parseoutcomes()["failed"] == 1
    result.stdout.fnmatch_lines(
        [
            "*nan in out[[]0, 0, 0, 0[]]; mask row [[]0, 0, 0[]] allows no key*",
            "*reproduce: xattn-check xattn_ref.zoo.known_bad:neg_inf_softmax --property finite_output*",
        ]
    )


def test_target_from_the_environment(run, monkeypatch):
    monkeypatch.setenv("XATTN_TARGET", "xattn_ref.zoo.known_bad:mutates_mask")
    result = run("--xattn-profile", "ci", "-k", "no_input_mutation and float64 and cpu")
    assert result.parseoutcomes()["failed"] == 1


def test_layer_targets(run):
    result = run(
        "--xattn-target",
        "xattn_ref.zoo.adapters:multihead_attention_layer()",
        "--xattn-kind",
        "layer",
        "--xattn-dim",
        "16",
        "--xattn-profile",
        "ci",
        "-k",
        "finite_output and float32 and cpu",
    )
    assert result.parseoutcomes()["failed"] == 1
    result.stdout.fnmatch_lines(["*--kind layer --dim 16 --context-dim 16*"])


def test_model_targets_run_through_the_plugin_too(run):
    result = run(
        "--xattn-target", "xattn_ref.zoo.known_bad:neg_inf_seq2seq()", "--xattn-kind", "model",
        "--xattn-vocab", "32", "--xattn-arch", "seq2seq", "--xattn-profile", "ci",
        "-k", "finite_output and float32 and cpu",
    )  # fmt: skip
    assert result.parseoutcomes()["failed"] == 1
    result.stdout.fnmatch_lines(["*encoder input is entirely padding*", "*--kind model --arch seq2seq*"])


HAS_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: cuda is not skipped")


@HAS_CUDA
def test_unavailable_devices_and_inapplicable_properties_are_skipped_with_the_reason(run):
    selected = "sdpa_kernel and (device_consistency or finite_output) and float32"
    result = run("--xattn-profile", "ci", "-k", selected, "-rs")
    assert result.ret == pytest.ExitCode.OK
    for line in (
        "*cuda: no CUDA device available*",
        "*mps: no MPS device available*",
        "*not-applicable: compares an accelerator with the CPU*",
    ):
        result.stdout.fnmatch_lines([line])


@HAS_CUDA
def test_a_run_that_tests_nothing_does_not_pass(run):
    result = run("--xattn-target", "xattn_ref.zoo.kernels:sdpa_kernel", "--xattn-device", "cuda")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    result.stdout.fnmatch_lines(["*xattn_ref: nothing was tested: cuda: no CUDA device available*"])


def test_xfail_file_matches_exact_ids_only(run, pytester):
    xfail = pytester.path / "xfail.txt"
    xfail.write_text("finite_output[float32-cpu]  # NaN on empty rows, known\ncached_decoding\n")
    result = run(
        "--xattn-target",
        "xattn_ref.zoo.known_bad:neg_inf_softmax",
        "--xattn-profile",
        "ci",
        "--xattn-xfail",
        str(xfail),
        "-k",
        "(finite_output or empty_rows_zero) and float32 and cpu",
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("xfailed") == 1 and outcomes.get("failed") == 1, outcomes
    result.stdout.fnmatch_lines(["*xfail entry 'cached_decoding' matches no test*"])


def test_the_database_keeps_and_replays_failures(run, pytester):
    db = pytester.path / "db"
    args = ["--xattn-target", "xattn_ref.zoo.known_bad:neg_inf_softmax", "--xattn-database", str(db)]
    assert run(*args, "-k", "finite_output and float32 and cpu").parseoutcomes()["failed"] == 1
    assert any(db.rglob("*"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--xattn-target", "nope_module:x"], "--xattn-target: module 'nope_module' not found"),
        (["--xattn-profile", "fast"], "--xattn-profile must be one of dev, ci, thorough, quick, got 'fast'"),
        (
            ["--xattn-kind", "layer", "--xattn-target", "xattn_ref.zoo.adapters:decoder_layer()"],
            "--xattn-dim",
        ),
        # an unusable target is one error, as in the CLI, not one failure per property and dtype
        (["--xattn-target", f"{TARGETS}:wrong_shape"], "unusable target"),
    ],
)
def test_usage_errors(run, args, message):
    result = run(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


def test_the_plugin_is_inert_in_projects_that_do_not_use_it(pytester, monkeypatch):
    monkeypatch.setenv("XATTN_PROFILE", "not-a-profile")
    pytester.makepyfile(test_mine="def test_ok():\n    assert True\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK
    assert "xattn_ref:" not in result.stdout.str() and "torch" not in result.stdout.str()


def test_importing_the_plugin_imports_neither_torch_nor_hypothesis():
    import subprocess
    import sys

    code = "import sys, xattn_ref.plugin; print('torch' in sys.modules, 'hypothesis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_xdist_workers_share_the_controllers_seed(run):
    """The controller draws the random seed and its header shows it; the workers (one is
    enough: a worker is its own process) draw with that seed, so its reproduce lines name it."""
    result = run(
        "-n", "1", "--xattn-target", "xattn_ref.zoo.known_bad:neg_inf_softmax", "-k", "finite_output and cpu"
    )
    assert result.parseoutcomes()["failed"] == 4
    header = next(line for line in result.stdout.lines if line.startswith("xattn_ref: targets"))
    controller = header.split(", seed ")[1].split()[0]
    seeds = {
        line.split("--seed ")[1].split()[0]
        for line in result.stdout.lines
        if "reproduce: xattn-check" in line
    }
    assert seeds == {controller}, (seeds, header)


def test_xdist_workers_keep_the_fixed_seed_of_the_ci_profile(run, monkeypatch):
    """Configured from the environment alone (as tox runs the suite), the controller does not
    resolve the configuration: its workers must still draw with the ci profile's seed 0, not a
    random one (a random seed made CI's suite run a lottery)."""
    monkeypatch.setenv("XATTN_TARGET", "xattn_ref.zoo.known_bad:neg_inf_softmax")
    monkeypatch.setenv("XATTN_PROFILE", "ci")
    result = run("-n", "1", "-k", "finite_output and cpu")
    assert result.parseoutcomes()["failed"] == 4
    reproduce = [line for line in result.stdout.lines if "reproduce: xattn-check" in line]
    assert reproduce and all("--profile ci" in line and "--seed" not in line for line in reproduce), reproduce


def test_kind_options_come_from_the_registry(run):
    from xattn_ref.kinds import KINDS
    from xattn_ref.plugin import OPTIONS

    assert {o.name for k in KINDS.values() for o in k.options} <= set(OPTIONS)


@pytest.mark.parametrize("off", ["off", "False"])  # one parser for every switch: tests/test_options.py
def test_a_switch_set_off_in_the_environment_is_off(run, monkeypatch, off):
    """``XATTN_STRICT=off`` must not turn strict mode on (the opt-in property stays out)."""
    monkeypatch.setenv("XATTN_STRICT", off)
    opt_in = "test_nan_padding_invariance[xattn_ref.zoo.kernels:sdpa_kernel"
    assert opt_in not in run("--xattn-target", "xattn_ref.zoo.kernels:sdpa_kernel", "--co", "-q").stdout.str()
    monkeypatch.setenv("XATTN_STRICT", "on")
    assert opt_in in run("--xattn-target", "xattn_ref.zoo.kernels:sdpa_kernel", "--co", "-q").stdout.str()


def test_absent_devices_are_one_skipped_test_with_the_reason(run):
    result = run("--xattn-target", "xattn_ref.zoo.kernels:sdpa_kernel", "--xattn-profile", "ci",
                 "--xattn-dtype", "float32", "--xattn-property", "finite_output", "-rs")  # fmt: skip
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED*cuda: no CUDA device available*"])


CAMPAIGN = '''
import os

import pytest
from hypothesis import settings
from hypothesis.database import DirectoryBasedExampleDatabase

# as HypoFuzz, a database of its own (Hypothesis's CI profile, under CI=true, keeps none)
settings.register_profile("campaign", database=DirectoryBasedExampleDatabase(".hypothesis/examples"))
settings.load_profile("campaign")

@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """A fuzzing campaign, as HypoFuzz runs one: the suite's Hypothesis test itself, keyed by
    its node id, saving what fails in the default example database."""
    if not os.environ.get("CAMPAIGN"):
        return None
    pyfuncitem.obj.hypothesis.inner_test._hypothesis_internal_add_digest = pyfuncitem.nodeid.encode()
    with pytest.raises(Exception, match="nan in out"):
        pyfuncitem.obj(xattn_run=pyfuncitem.funcargs["xattn_run"])
    return True
'''


def test_a_failure_a_fuzzing_campaign_saved_is_replayed_by_the_gate(run, pytester, monkeypatch):
    pytester.makepyfile(campaign_plugin=CAMPAIGN)
    pytester.syspathinsert()  # where -p finds campaign_plugin
    args = ["-p", "campaign_plugin", "--xattn-target", "xattn_ref.zoo.known_bad:neg_inf_softmax",
            "--xattn-dtype", "float32", "-k", "finite_output"]  # fmt: skip
    monkeypatch.setenv("CAMPAIGN", "1")
    assert run(*args).parseoutcomes()["passed"] == 1  # the campaign found the NaN and saved it
    assert any(pytester.path.joinpath(".hypothesis", "examples").rglob("*"))
    monkeypatch.delenv("CAMPAIGN")
    gate = run(*args[2:], "--xattn-database", ".hypothesis/examples")  # the gate, as CI runs it
    assert gate.ret == pytest.ExitCode.TESTS_FAILED
    # one key for the property test: the gate's own run replays the campaign's failure first
    held = "*the example database held 1 example(s) saved for this test*"
    gate.stdout.fnmatch_lines([held, "*nan in out*"])


def test_without_a_target_the_suite_gates_the_correct_built_ins_only(run):
    """The main job shows two built-ins that fail as expected; the suite gates correct code."""
    ids = run("--co", "-q").stdout.str()
    assert "test_finite_output[" in ids and "sdpa" in ids
    assert "neg_inf_softmax" not in ids and "built-in correct targets" in ids
