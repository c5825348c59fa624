"""The CLI, run as a subprocess: verdicts, exit status, formats, and bad targets."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from xattn_ref.known_bad import CAUGHT_BY

TARGETS = Path(__file__).parent / "targets" / "bad_targets.py"
FAST = ["--profile", "ci", "--max-examples", "25", "--device", "cpu"]
# The dtype in which each known-bad kernel's defect shows.
DTYPE = {"minus_1e9_fill": "float16", "half_precision_math": "float32"}


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xattn_ref", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize("name", list(CAUGHT_BY))
def test_each_known_bad_kernel_exits_1_naming_its_property(name):
    r = cli(f"xattn_ref.known_bad:{name}", *FAST, "--dtype", DTYPE.get(name, "float64"))
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{CAUGHT_BY[name]} failed for xattn_ref.known_bad:{name}" in r.stdout
    assert "reproduce: xattn-check xattn_ref.known_bad:" in r.stdout


def test_a_good_kernel_exits_0():
    r = cli(f"{TARGETS}:good_kernel", *FAST, "--dtype", "float32,bfloat16")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verdict: all properties hold" in r.stdout


def test_a_good_layer_factory_exits_0():
    r = cli(f"{TARGETS}:good_layer()", "--kind", "layer", "--dim", "16", *FAST, "--dtype", "float32")
    assert r.returncode == 0, r.stdout + r.stderr


def test_multihead_attention_as_most_code_calls_it_is_flagged():
    r = cli(
        "xattn_ref.adapters:multihead_attention_layer()",
        "--kind",
        "layer",
        "--dim",
        "16",
        *FAST,
        "--dtype",
        "float32",
        "--property",
        "finite_output",
    )
    assert r.returncode == 1 and "nan in y[0, 0, 0]" in r.stdout
    assert "the context of batch element 0 is entirely padding" in r.stdout


def test_multihead_attention_with_need_weights_false_passes(tmp_path):
    factory = tmp_path / "mha.py"
    factory.write_text(
        "from xattn_ref.adapters import multihead_attention_layer\n"
        "def build():\n    return multihead_attention_layer(16, 2, need_weights=False)\n"
    )
    r = cli(f"{factory}:build()", "--kind", "layer", "--dim", "16", *FAST, "--dtype", "float32")
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("no_such_module_xyz:attn", "module 'no_such_module_xyz' not found"),
        ("xattn_ref.known_bad:no_such_kernel", "has no attribute 'no_such_kernel'"),
        (f"{TARGETS}:not_callable", "is int, not callable"),
        (f"{TARGETS}:wrong_shape", "returned shape (2, 2, 3, 1); expected (B, H, Lq, Dv) = (2, 2, 3, 8)"),
        (f"{TARGETS}:returns_list", "returned list; expected a torch.Tensor"),
        (f"{TARGETS}:raises", "the target raised RuntimeError: kernel exploded"),
        ("missing/file.py:attn", "target file 'missing/file.py' does not exist"),
        ("no-colon", "must look like 'package.module:name'"),
    ],
)
def test_bad_targets_exit_2_with_a_one_line_reason(target, reason):
    r = cli(target, *FAST)
    assert r.returncode == 2
    assert reason in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--dtype", "float8"], "--dtype: unknown dtype 'float8'"),
        (["--device", "tpu"], "--device: unknown device 'tpu'"),
        (["--property", "finiteness"], "--property: unknown property 'finiteness'"),
        (["--profile", "fast"], "unknown profile 'fast'"),
        (["--kind", "layer"], "--dim E is required with --kind layer"),
    ],
)
def test_bad_options_exit_2(args, reason):
    r = cli("xattn_ref.targets:sdpa_kernel", *args)
    assert r.returncode == 2 and reason in r.stderr, r.stderr


def test_json_output():
    r = cli(
        "xattn_ref.known_bad:neg_inf_softmax",
        *FAST,
        "--dtype",
        "float32",
        "--property",
        "finite_output,no_input_mutation",
        "--format",
        "json",
    )
    report = json.loads(r.stdout)
    assert r.returncode == 1 and report["ok"] is False
    by_property = {(x["property"], x["device"]): x for x in report["results"]}
    failed = by_property[("finite_output", "cpu")]
    assert failed["status"] == "failed" and failed["examples"] >= 1
    assert "allows no key" in failed["message"] and failed["reproduce"].startswith("xattn-check ")
    assert by_property[("no_input_mutation", "cpu")]["status"] == "passed"
    assert set(failed) >= {"property", "dtype", "device", "status", "examples", "message", "reproduce"}


def test_junit_output_and_output_file(tmp_path):
    out = tmp_path / "report.xml"
    r = cli(
        "xattn_ref.known_bad:neg_inf_softmax",
        *FAST,
        "--dtype",
        "float32",
        "--property",
        "finite_output",
        "--format",
        "junit",
        "--output",
        str(out),
    )
    assert r.returncode == 1 and "report written to" in r.stdout
    suite = ET.parse(out).getroot()
    assert suite.get("failures") == "1"


def test_xfail_file_keeps_the_rest_of_the_gate(tmp_path):
    xfail = tmp_path / "xfail.txt"
    xfail.write_text(
        "finite_output[float32-cpu]  # known: NaN on empty contexts, tracked upstream\nno_such_property\n"
    )
    r = cli(
        "xattn_ref.known_bad:neg_inf_softmax",
        *FAST,
        "--dtype",
        "float32",
        "--property",
        "finite_output,no_input_mutation",
        "--xfail",
        str(xfail),
    )
    assert r.returncode == 0, r.stdout
    assert "xfail" in r.stdout and "matches no result" in r.stderr


def test_list_properties():
    r = cli("--list")
    assert r.returncode == 0 and "padding_invariance" in r.stdout and "layer properties:" in r.stdout
