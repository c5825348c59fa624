"""The pytest plugin, driven through pytester."""

from __future__ import annotations

import os
from importlib.metadata import entry_points
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "properties" / "test_kernel_properties.py"
LAYER_SUITE = ROOT / "properties" / "test_layer_properties.py"


@pytest.fixture
def suite(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    pytester.makepyfile(test_kernel=SUITE.read_text(), test_layer=LAYER_SUITE.read_text())
    installed = any(ep.value == "xattn_ref.plugin" for ep in entry_points(group="pytest11"))
    if not installed:  # a bare checkout: load the plugin the way the root conftest does
        pytester.makeconftest('pytest_plugins = ["xattn_ref.plugin"]')
    return pytester


def test_header_names_target_profile_and_seed(suite):
    result = suite.runpytest_subprocess(
        "--xattn-target",
        "xattn_ref.targets:sdpa_kernel",
        "--xattn-seed",
        "7",
        "--xattn-profile",
        "dev",
        "--co",
    )
    assert (
        "xattn_ref: targets xattn_ref.targets:sdpa_kernel (kernel); profile dev; seed 7"
        in result.stdout.str()
    )


def test_a_bad_target_fails_with_the_report(suite):
    result = suite.runpytest_subprocess(
        "--xattn-target",
        "xattn_ref.known_bad:neg_inf_softmax",
        "--xattn-profile",
        "ci",
        "-k",
        "finite_output and float32 and cpu",
    )
    assert result.parseoutcomes()["failed"] == 1
    result.stdout.fnmatch_lines(
        [
            "*nan in out[[]0, 0, 0, 0[]]; mask row [[]0, 0, 0[]] allows no key*",
            "*reproduce: xattn-check xattn_ref.known_bad:neg_inf_softmax --property finite_output*",
        ]
    )


def test_target_from_the_environment(suite, monkeypatch):
    monkeypatch.setenv("XATTN_TARGET", "xattn_ref.known_bad:mutates_mask")
    result = suite.runpytest_subprocess(
        "--xattn-profile", "ci", "-k", "no_input_mutation and float64 and cpu"
    )
    assert result.parseoutcomes()["failed"] == 1


def test_layer_targets(suite):
    result = suite.runpytest_subprocess(
        "--xattn-target",
        "xattn_ref.adapters:multihead_attention_layer()",
        "--xattn-kind",
        "layer",
        "--xattn-dim",
        "16",
        "--xattn-profile",
        "ci",
        "-k",
        "test_layer_property and finite_output and float32 and cpu",
    )
    assert result.parseoutcomes()["failed"] == 1
    result.stdout.fnmatch_lines(["*--kind layer --dim 16 --context-dim 16*"])


def test_unavailable_devices_are_skipped_with_the_reason(suite):
    result = suite.runpytest_subprocess(
        "--xattn-profile", "ci", "-k", "finite_output and float32 and not cpu", "-rs"
    )
    result.stdout.fnmatch_lines(["*cuda: no CUDA device available*", "*mps: no MPS device available*"])


def test_xfail_file(suite):
    xfail = suite.path / "xfail.txt"
    xfail.write_text("finite_output[float32-cpu]  # NaN on empty rows, known (the CLI's id form)\n")
    result = suite.runpytest_subprocess(
        "--xattn-target",
        "xattn_ref.known_bad:neg_inf_softmax",
        "--xattn-profile",
        "ci",
        "--xattn-xfail",
        str(xfail),
        "-k",
        "finite_output and float32 and cpu",
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("xfailed") == 1 and "failed" not in outcomes


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--xattn-target", "nope_module:x"], "--xattn-target: module 'nope_module' not found"),
        (["--xattn-profile", "fast"], "unknown profile 'fast'"),
        (["--xattn-kind", "layer", "--xattn-target", "xattn_ref.adapters:decoder_layer()"], "--xattn-dim"),
    ],
)
def test_usage_errors(suite, args, message):
    result = suite.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()
