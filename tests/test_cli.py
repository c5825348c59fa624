"""The CLI: verdicts, statuses, exit status, formats, reproduction.

Most tests call ``xattn_ref.cli.main`` in-process (torch is imported once); the ones about the
process itself (``python -m``, the current folder, parallel workers) run it as a subprocess.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

from xattn_ref.cli import main
from xattn_ref.report import Progress
from xattn_ref.runner import Result
from xattn_ref.zoo.known_bad import CAUGHT_BY

TARGETS = Path(__file__).parent / "targets" / "bad_targets.py"
FAST = ["--profile", "ci", "--max-examples", "25", "--device", "cpu", "--quiet"]
# The dtype in which each known-bad kernel's defect shows.
DTYPE = {
    "minus_1e9_fill": "float16",
    "half_precision_math": "float32",
    "wrong_scale_in_bfloat16": "bfloat16",
    "finfo_min_additive": "float16",
    "half_accumulator": "bfloat16",
    "half_softmax": "float16",
    "half_logsumexp": "bfloat16",
    "sentinel_empty_rows": "float32",
}


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``xattn-check ARGS`` in this process: exit status, stdout and stderr. Serial unless
    ``--jobs`` is given (forking a pytest worker is not safe)."""
    if "--jobs" not in args and "--list" not in args:
        args = (*args, "--jobs", "1")
    out, err = io.StringIO(), io.StringIO()
    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = main(list(args))
            except SystemExit as exc:  # argparse
                status = int(exc.code or 0)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return subprocess.CompletedProcess(["xattn-check", *args], status, out.getvalue(), err.getvalue())


def cli_process(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m xattn_ref ARGS`` as a subprocess."""
    command = [sys.executable, "-m", "xattn_ref", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False, cwd=cwd)


def reproduce_lines(text: str) -> list[list[str]]:
    return [
        shlex.split(line.split("reproduce: ", 1)[1]) for line in text.splitlines() if "reproduce: " in line
    ]


# batch_global_max needs two batch elements of very different scales: 100-300 examples; a sum
# accumulated in half precision, long rows of values far from zero mean: 200-400 (docs/figures.md); a
# sentinel mistaken for an empty row, rows shifted below it: about 200.
EXAMPLES = {
    "sentinel_empty_rows": "500",
    "batch_global_max": "300",
    "unguarded_long_context": "300",
    "half_accumulator": "500",
    "half_softmax": "500",
    "finfo_min_additive": "300",  # float16 finfo.min + logit overflow: a rare case (docs/figures.md: ~250)
}


# test_meta shows each known-bad kernel caught by its property; through the CLI, three of them
# in the default tier (a NaN, a gradient, a mutation), every one in the sweep
CLI_SAMPLE = ("neg_inf_softmax", "dk_doubled", "mutates_mask")


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=() if n in CLI_SAMPLE else pytest.mark.sweep) for n in CAUGHT_BY]
)
def test_each_known_bad_kernel_exits_1_naming_its_property(name):
    args = [*FAST, "--max-examples", EXAMPLES.get(name, "25"), "--dtype", DTYPE.get(name, "float64")]
    if name in ("half_accumulator", "half_softmax", "sentinel_empty_rows", "half_precision_math"):
        args += ["--property", CAUGHT_BY[name]]
    r = cli(f"xattn_ref.zoo.known_bad:{name}", *args)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{CAUGHT_BY[name]} failed for xattn_ref.zoo.known_bad:{name}" in r.stdout
    assert "reproduce: xattn-check xattn_ref.zoo.known_bad:" in r.stdout


def test_a_backend_that_takes_nothing_here_is_not_applicable_and_the_run_exits_2():
    r = cli("xattn_ref.zoo.adapters:sdpa_efficient", *FAST, "--device", "cpu", "--property", "finite_output")
    assert r.returncode == 2, r.stdout + r.stderr
    assert (
        "n/a: finite_output: none of the 25 drawn examples exercised it; the target did not take 25"
        in r.stdout
    )
    assert "SDPA's efficient backend takes no such input" in r.stdout


def test_a_good_kernel_exits_0_and_says_what_was_not_tested():
    r = cli(f"{TARGETS}:good_kernel", *FAST, "--dtype", "float64,bfloat16")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verdict: every tested property holds" in r.stdout
    assert "n/a: device_consistency: compares an accelerator with the CPU" in r.stdout
    assert "torch threads 1" in r.stdout


def test_help_lists_every_option_of_every_kind(capsys):
    from xattn_ref.kinds import KINDS

    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    shown = capsys.readouterr().out
    assert all(o.flag in shown for kind in KINDS.values() for o in kind.options)


def test_a_run_that_tests_nothing_exits_2():
    if "cuda" not in r_devices_absent():
        pytest.skip("this machine has CUDA")
    r = cli(f"{TARGETS}:good_kernel", "--device", "cuda", "--quiet")
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.count("\n") == 1 and "nothing can run here: cuda: no CUDA device available" in r.stderr
    r = cli(f"{TARGETS}:good_kernel", *FAST, "--property", "device_consistency")
    assert r.returncode == 2 and "nothing was tested" in r.stderr, r.stdout + r.stderr


def r_devices_absent() -> str:
    import torch

    return "" if torch.cuda.is_available() else "cuda"


def test_the_probe_uses_the_requested_dtype():
    r = cli(
        f"{TARGETS}:half_only", *FAST, "--dtype", "float16", "--property", "finite_output,no_input_mutation"
    )
    assert r.returncode == 0, r.stdout + r.stderr
    r = cli(f"{TARGETS}:half_only", *FAST, "--dtype", "float32")
    assert r.returncode == 2 and "unusable target" in r.stderr and "probed on float32, cpu" in r.stderr


def test_the_probe_uses_the_first_requested_device_that_is_available():
    if not r_devices_absent():
        pytest.skip("this machine has CUDA")
    args = [f"{TARGETS}:device_only", "--profile", "ci", "--max-examples", "5", "--quiet"]
    r = cli(*args, "--device", "cuda,cpu", "--property", "finite_output", env={"XATTN_TEST_DEVICE": "cpu"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "not run: cuda: no CUDA device available" in r.stdout


def test_a_target_that_misbehaves_on_a_drawn_case_is_a_finding_with_a_minimal_case():
    r = cli(f"{TARGETS}:detached_for_one_key", *FAST, "--dtype", "float32")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "error (the target misbehaved on a valid input)" in r.stdout
    assert "not differentiable" in r.stdout
    assert "minimal example: B=1 H=1 Lq=1 Lk=1" in r.stdout
    assert "reproduce: xattn-check" in r.stdout


def test_an_output_with_no_graph_whose_gradient_is_zero_is_a_zero_gradient():
    """Zeros a kernel started from, for a batch with no allowed key, have no graph: their gradient
    is zero, which is right (the same kernel detaching a non-zero output is the error above)."""
    props = "finite_grad,empty_rows_zero,reference_agreement,dtype_consistency"
    r = cli(f"{TARGETS}:detached_when_all_padding", *FAST, "--dtype", "float32,float16", "--property", props)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ERROR" not in r.stdout
    # zeros with no graph where the true output (and gradient) is not zero: a failure, not a pass
    r = cli(f"{TARGETS}:zeros_for_one_key", *FAST, "--dtype", "float32", "--property", "reference_agreement")
    assert r.returncode == 1 and "reference_agreement failed" in r.stdout, r.stdout


def test_the_printed_reproduce_commands_reproduce(tmp_path):
    args = ["--dtype", "float32", "--property", "finite_output"]
    r = cli("xattn_ref.zoo.known_bad:neg_inf_softmax", *FAST, *args)
    commands = reproduce_lines(r.stdout)
    assert r.returncode == 1 and len(commands) == 1
    cmd = commands[0]
    assert cmd[0] == "xattn-check"
    again = cli(*cmd[1:], "--quiet")
    assert (
        again.returncode == 1
        and "finite_output failed for xattn_ref.zoo.known_bad:neg_inf_softmax" in again.stdout
    )
    # the same minimal example
    assert r.stdout.split("minimal example: ")[1].splitlines()[0] in again.stdout


def test_the_main_job_is_one_line_per_target_and_ends_with_its_conclusion():
    r = cli("--dtype", "float32", "--device", "cpu", "--property", "finite_output", "--quiet",
            "--max-examples", "5")  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[-1].startswith("xattn-check: ok: ") and " fail as expected; " in lines[-1], lines[-1]
    assert "What a finding looks like" in r.stdout and len(reproduce_lines(r.stdout)) == 1
    assert len(lines) <= 80 and "NOT as expected" not in r.stdout


def test_the_main_jobs_reproduce_commands_reproduce():
    r = cli(
        "--dtype",
        "float32",
        "--device",
        "cpu",
        "--property",
        "finite_output",
        "--quiet",
        "--max-examples",
        "10",
        "--format",
        "json",
    )
    assert r.returncode == 0, r.stdout + r.stderr  # every built-in verdict as expected
    findings = [e for e in json.loads(r.stdout)["results"] if e["reproduce"]]
    commands = [shlex.split(e["reproduce"]) for e in findings]
    assert len(commands) == 2, r.stdout  # the -inf softmax kernel and nn.MultiheadAttention's NaN
    for cmd in commands:
        again = cli(*cmd[1:], "--quiet")
        assert again.returncode == 1 and "finite_output failed for" in again.stdout, (cmd, again.stdout)


def test_the_database_replays_a_failure(tmp_path):
    db = str(tmp_path / "db")
    target = f"{TARGETS}:wrong_for_long_contexts"
    args = [target, "--device", "cpu", "--dtype", "float32", "--property", "reference_agreement", "--quiet"]
    first = cli(*args, "--database", db, "--max-examples", "200", "--seed", "1")
    assert first.returncode == 1, first.stdout
    assert any(files for _, _, files in os.walk(db))
    without = cli(*args, "--max-examples", "1", "--seed", "2")
    assert without.returncode == 0, without.stdout  # one fresh example does not find it
    replay = cli(*args, "--database", db, "--max-examples", "1", "--seed", "2")
    assert replay.returncode == 1 and "reference_agreement failed" in replay.stdout, replay.stdout


PARALLEL = """
import torch
from xattn_ref import plan, runner
from xattn_ref.profiles import profile_settings
from xattn_ref.targets import as_target, load_target

# wrong_scale_without_mask fails after a number of examples that depends on the seed (cheaply)
specs = ("xattn_ref.zoo.known_bad:wrong_scale_without_mask", "xattn_ref.zoo.kernels:sdpa_kernel")
targets = [load_target(s) for s in specs]
props = {t.name: ["batch_independence", "reference_agreement"] for t in targets}
tasks = plan.tasks(targets, props, [torch.float32, torch.float16], ["cpu"])
settings = profile_settings("ci", max_examples=20)
go = lambda jobs: [
    (r.target, r.property, r.dtype, r.status, r.examples, r.message, r.case)
    for r in runner.run_tasks(targets, tasks, settings=settings, seed=5, jobs=jobs)
]
serial = go(1)
assert runner._start_method(targets) == "fork"
forked = go(2)
assert serial == forked, (serial, forked)
runner._can_fork = lambda: False  # as with an initialised CUDA context, or on macOS
assert runner._start_method(targets) == "spawn"
assert runner._start_method([as_target(lambda q, k, v, mask: q)]) is None  # held in-process: serial
spawned = go(2)
assert serial == spawned, (serial, spawned)
print(sum(r[3] == "failed" for r in serial), "failed", sum(r[3] == "passed" for r in serial), "passed")
"""


def test_the_same_seed_gives_the_same_verdicts_and_cases_serially_forked_and_spawned():
    """``--jobs 2`` forks workers (``run_tasks``, as the CLI calls it); where fork is unsafe they
    are spawned and load the targets again. One process for the three: forking a pytest worker
    is not safe, and each process imports torch again."""
    r = subprocess.run(
        [sys.executable, "-c", PARALLEL], capture_output=True, text=True, timeout=300, check=False
    )
    assert r.returncode == 0, r.stderr
    failed, _, passed, _ = r.stdout.split()
    # the three agree on failures (the known-bad's, which depend on the seed) and passes (SDPA's 4)
    assert int(failed) >= 2 and int(passed) >= 4 and int(failed) + int(passed) == 8, r.stdout


def test_a_fixed_seed_profile_honours_seed():
    base = [f"{TARGETS}:good_kernel", *FAST, "--dtype", "float32", "--property", "finite_output"]
    r = cli(*base, "--seed", "5")
    assert r.returncode == 0 and "profile ci (25 examples per run), seed 5" in r.stdout


def test_a_file_target_can_import_the_modules_beside_it(tmp_path):
    (tmp_path / "helper.py").write_text("from xattn_ref.zoo.kernels import sdpa_kernel as attend\n")
    (tmp_path / "mine.py").write_text("from helper import attend\n")
    r = cli(f"{tmp_path / 'mine.py'}:attend", *FAST, "--dtype", "float32", "--property", "finite_output")
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_module_target_is_looked_up_from_the_current_folder(tmp_path):
    (tmp_path / "localattn.py").write_text("from xattn_ref.zoo.kernels import sdpa_kernel as attend\n")
    r = cli_process(
        "localattn:attend", *FAST, "--dtype", "float32", "--property", "finite_output", cwd=tmp_path
    )
    assert r.returncode == 0, r.stdout + r.stderr


ZOO_FREE_RUN = """
import sys
from xattn_ref.cli import main
status = main([sys.argv[1], "--dtype", "float32", "--property", "finite_output", "--quiet", "--jobs", "1"])
print(status, sorted(m for m in sys.modules if m.startswith("xattn_ref.zoo")))
"""


def test_a_run_of_your_target_imports_none_of_the_zoo(tmp_path):
    """The zoo (correct kernels, known-bads, adapters, built-ins) is loaded for the main job
    alone (``plan.builtin_targets``), never for a target of your own."""
    (tmp_path / "mine.py").write_text(
        "import torch\n\n"
        "def attend(q, k, v, mask):\n"
        "    s = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5\n"
        "    s = s if mask is None else s.masked_fill(~mask, float('-inf'))\n"
        "    return torch.softmax(s, -1).nan_to_num(0.0) @ v\n"
    )
    command = [sys.executable, "-c", ZOO_FREE_RUN, f"{tmp_path / 'mine.py'}:attend"]
    r = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert r.stdout.splitlines()[-1] == "0 []", r.stdout + r.stderr


def test_a_layer_factory_that_takes_dtype_and_device_works_in_every_dtype():
    r = cli(
        f"{TARGETS}:layer_in_every_dtype()",
        "--kind",
        "layer",
        "--dim",
        "16",
        *FAST,
        "--property",
        "finite_output,dtype_consistency",
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_good_layer_factory_exits_0():
    r = cli(f"{TARGETS}:good_layer()", "--kind", "layer", "--dim", "16", *FAST, "--dtype", "float32")
    assert r.returncode == 0, r.stdout + r.stderr


def test_multihead_attention_as_most_code_calls_it_is_flagged():
    r = cli(
        "xattn_ref.zoo.adapters:multihead_attention_layer()",
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
    assert "--kind layer --dim 16 --context-dim 16" in r.stdout


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("no_such_module_xyz:attn", "module 'no_such_module_xyz' not found"),
        ("xattn_ref.zoo.known_bad:no_such_kernel", "has no attribute 'no_such_kernel'"),
        (f"{TARGETS}:not_callable", "is int, not callable"),
        (f"{TARGETS}:wrong_shape", "returned shape (2, 2, 3, 1); expected (B, H, Lq, Dv) = (2, 2, 3, 8)"),
        (f"{TARGETS}:returns_list", "returned list; expected a torch.Tensor"),
        (f"{TARGETS}:raises", "the target raised RuntimeError: kernel exploded"),
        ("missing/file.py:attn", "target file 'missing/file.py' does not exist"),
        ("no-colon", "must look like 'package.module:name'"),
    ],
)
def test_bad_targets_exit_2_with_a_one_line_reason(target, reason):
    r = cli_process(target, *FAST) if target == "no-colon" else cli(target, *FAST)
    assert r.returncode == 2
    assert reason in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--dtype", "float8"], "--dtype: unknown dtype 'float8'"),
        (["--device", "tpu"], "--device: unknown device 'tpu'"),
        (["--property", "finiteness"], "--property: unknown property 'finiteness'"),
        (["--profile", "fast"], "--profile must be one of dev, ci, thorough, quick, got 'fast'"),
        (["--kind", "layer"], "--dim is required for the layer kind"),
        (["--seed", "x"], "--seed must be an integer, got 'x'"),
        (["--jobs", "0"], "--jobs must be at least 1, got 0"),
        (
            ["--output", "no/such/folder/report.txt"],
            "--output: the folder of 'no/such/folder/report.txt' does not exist",
        ),
        (["--devcie", "cpu"], "unrecognized arguments: --devcie cpu (did you mean --device?)"),
        (
            ["--dtyp", "float32"],
            "unrecognized arguments: --dtyp float32 (did you mean --dtype?)",
        ),  # no abbreviations
        (["--dtype", "flaot32"], "(did you mean float32?)"),
        (["--key-padding", "--mask", "additive", "--bias"], "these options do not go together: a bias needs"),
    ],
)
def test_bad_options_exit_2_before_the_run(args, reason):
    r = cli("xattn_ref.zoo.kernels:sdpa_kernel", *args)
    assert r.returncode == 2 and reason in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_usage_errors_come_before_torch_is_imported():
    """A misspelled option is answered at once: the process never imports torch."""
    code = (
        "import sys\nfrom xattn_ref.cli import main\n"
        "status = main(['x:y', '--dtype', 'float8'])\nprint(status, 'torch' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert r.stdout.split() == ["2", "False"], r.stdout + r.stderr
    assert "--dtype: unknown dtype 'float8'" in r.stderr


def test_a_negative_value_is_taken_as_printed():
    """``--sentinel -1e4``, as reproduce lines print it (a kernel that masks with -1e4)."""
    args = ["xattn_ref.guard:safe_sdpa", *FAST, "--mask", "sentinel", "--property", "finite_output"]
    r = cli(*args, "--sentinel", "-1e4", "--dtype", "float32")
    assert r.returncode == 0 and "-1e4 = masked" in r.stdout, r.stdout + r.stderr


def test_json_output():
    r = cli(
        "xattn_ref.zoo.known_bad:neg_inf_softmax",
        *FAST,
        "--dtype",
        "float32",
        "--property",
        "finite_output,no_input_mutation,padding_invariance,device_consistency",
        "--format",
        "json",
    )
    report = json.loads(r.stdout)
    assert r.returncode == 1 and report["ok"] is False and report["exit_status"] == 1
    by_property = {x["property"]: x for x in report["results"] if x["device"] == "cpu"}
    failed = by_property["finite_output"]
    assert failed["status"] == "failed" and failed["examples"] >= 1 and failed["applied"] >= 1
    assert "allows no key" in failed["message"] and failed["reproduce"].startswith("xattn-check ")
    assert "CaseSpec(" in failed["rebuild"]
    assert by_property["no_input_mutation"]["status"] == "passed"
    assert by_property["padding_invariance"]["follows_from"] == "finite_output"
    assert by_property["device_consistency"]["status"] == "not-applicable"


def test_junit_output_and_output_file(tmp_path):
    out = tmp_path / "report.xml"
    r = cli(
        "xattn_ref.zoo.known_bad:neg_inf_softmax",
        *FAST,
        "--dtype",
        "float32",
        "--property",
        "finite_output,device_consistency",
        "--format",
        "junit",
        "--output",
        str(out),
    )
    assert r.returncode == 1 and "report written to" in r.stdout
    suite = ET.parse(out).getroot()
    assert suite.get("failures") == "1" and suite.get("skipped") == "1"


def test_xfail_file_keeps_the_rest_of_the_gate(tmp_path):
    xfail = tmp_path / "xfail.txt"
    xfail.write_text(
        "finite_output[float32-cpu]  # known: NaN on empty contexts, tracked upstream\n"
        "empty_rows_zero[float16-cpu]\n"
    )
    args = ["xattn_ref.zoo.known_bad:neg_inf_softmax", *FAST, "--dtype", "float32", "--xfail", str(xfail)]
    r = cli(*args, "--property", "empty_rows_zero")
    assert r.returncode == 1, r.stdout  # ids match exactly: empty_rows_zero[float32-cpu] still fails
    assert "'empty_rows_zero[float16-cpu]' matches no result" in r.stderr
    # an xfail of a root covers what follows from it (empty_rows_zero fails through finite_output's NaN)
    r = cli(*args, "--property", "finite_output,empty_rows_zero")
    assert r.returncode == 0, r.stdout
    assert r.stdout.count("xfail") == 2, r.stdout


def test_list_kinds_and_properties():
    r = cli("--list")
    assert (
        r.returncode == 0
        and "padding_invariance" in r.stdout
        and "layer: fn(x, context, context_mask)" in r.stdout
    )


def test_progress_is_shown_on_a_terminal_only_and_a_log_gets_the_summary():
    args = [f"{TARGETS}:good_kernel", "--profile", "ci", "--max-examples", "3", "--device", "cpu",
            "--dtype", "float32,float16", "--property", "finite_output,no_input_mutation"]  # fmt: skip
    r = cli(*args)  # stderr is not a terminal here, as in CI
    assert r.returncode == 0 and not [line for line in r.stderr.splitlines() if line.startswith("[")]
    assert r.stdout.splitlines()[-1].startswith("xattn-check: ok")
    stream = io.StringIO()
    progress = Progress(2, stream, live=False)  # what a terminal's live line is made of
    for result in (Result("t", "finite_output", "float32", "cpu", "passed", 3),) * 2:
        progress.done(result)
    last = stream.getvalue().splitlines()[-1]
    assert last.startswith("[2/2") and "passed (3 examples)" in last


def test_usage_errors_a_newcomer_meets_are_one_line_and_exit_2(tmp_path):
    typo = tmp_path / "xfail.txt"
    typo.write_text("finite_outptu  # a typo\n")
    r = cli(f"{TARGETS}:good_kernel", *FAST, "--xfail", str(typo))
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "unknown property 'finite_outptu' (did you mean finite_output?)" in r.stderr
    if not torch.cuda.is_available():
        r = cli(f"{TARGETS}:good_kernel", "--device", "cuda")
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no CUDA device" in r.stderr, r.stderr
    r = cli("xattn_ref.zoo.kernels:sdpa_kernel", "--kind", "model")
    assert r.returncode == 2 and "--kind kernel" in r.stderr


def test_one_unit_in_the_verdict_and_the_summary_and_a_hint_for_an_inverted_mask():
    r = cli(f"{TARGETS}:padding_mask_kernel", *FAST, "--dtype", "float32")
    assert r.returncode == 1
    verdict = next(line for line in r.stdout.splitlines() if "verdict:" in line)
    count = verdict.split("verdict: ")[1].split(" failing")[0]
    assert f"FAILED: {count} failing properties" in r.stdout and "runs failed)" in verdict
    assert "hint: the minimal case holds with the mask inverted" in r.stdout
    assert "--call 'q, k, v, ~mask'" in r.stdout
    # the padding class itself (a row with no allowed key) is not taken for a convention
    r = cli("xattn_ref.zoo.known_bad:neg_inf_softmax", *FAST, "--dtype", "float32")
    assert r.returncode == 1 and "hint:" not in r.stdout


def test_strict_adds_the_opt_in_properties():
    base = ["xattn_ref.zoo.kernels:sdpa_kernel", *FAST, "--dtype", "float32", "--property"]
    assert "nan_padding_invariance" not in cli(*base[:-1]).stdout
    r = cli(*base[:-1], "--strict", "--skip", "reference_agreement,finite_grad,dtype_consistency")
    assert r.returncode == 1 and "nan_padding_invariance failed" in r.stdout, r.stdout


def test_a_kernel_that_always_takes_a_mask_declares_it_with_one_option():
    args = [f"{TARGETS}:mask_required_kernel", *FAST, "--dtype", "float32"]
    r = cli(*args)  # mask=None in one case in eight: the kernel raises on it
    assert r.returncode == 1 and "ERROR" in r.stdout and "mask None" in r.stdout
    r = cli(*args, "--always-mask")
    assert r.returncode == 0, r.stdout
    assert "mask None" not in r.stdout and "mask bool" in r.stdout


def test_an_unusable_target_is_one_line_however_long_its_error():
    r = cli(f"{TARGETS}:cuda_only", *FAST)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "unusable target" in r.stderr and "Could not run" in r.stderr and "(on q (2, 2, 3, 8)" in r.stderr
