"""The CLI through typer's CliRunner: exit codes, what must and must not appear, files on disk."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench_cli.cli import app
from bench_cli.tasks.data import RemoteFile

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_help_and_list() -> None:
    res = invoke("--help")
    assert res.exit_code == 0 and "run" in res.output and "list" in res.output
    res = invoke("list")
    assert res.exit_code == 0
    for name in ("adamw", "ademamix", "rosenbrock", "lm-small"):
        assert name in res.output


def test_show_optimizer_prints_math_defaults_and_memory() -> None:
    res = invoke("show", "AdEMAMix")
    assert res.exit_code == 0
    assert "alpha = 2.0" in res.output and "beta3_warmup = None" in res.output
    assert "state memory" in res.output and "Pagliardini" in res.output


def test_show_task_prints_defaults_target_and_unit() -> None:
    res = invoke("show", "lm-small")
    assert res.exit_code == 0
    assert "unit: tokens" in res.output and "val_loss <= 2" in res.output
    assert "steps=2000" in res.output


def test_run_rosenbrock_writes_records_and_prints_side_by_side(tmp_path: Path) -> None:
    out = tmp_path / "res"
    res = invoke(
        "run",
        "--opt",
        "adamw,ademamix",
        "--task",
        "rosenbrock",
        "--out",
        str(out),
        "--steps",
        "100",
        "--quiet",
    )
    assert res.exit_code == 0, res.output
    assert "adamw" in res.output and "ademamix" in res.output and "steps to target" in res.output
    files = sorted(out.glob("*.json"))
    assert len(files) == 2
    data = [json.loads(f.read_text()) for f in files]
    assert {d["optimizer"] for d in data} == {"adamw", "ademamix"}
    assert all(d["steps_done"] == 100 for d in data)


def test_run_lm_small_tiny_with_local_data(tmp_path: Path, shared_data: Path) -> None:
    res = invoke(
        "run",
        "--opt",
        "adamw",
        "--task",
        "lm-small",
        "--set",
        "preset=tiny",
        "--data",
        str(shared_data / "tinyshakespeare.txt"),
        "--out",
        str(tmp_path),
        "--quiet",
    )
    assert res.exit_code == 0, res.output
    (rec,) = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert rec["unit"] == "tokens" and rec["tokens_done"] == 20 * 4 * 32
    assert rec["curve"][-1]["metrics"]["val_loss"] < rec["curve"][0]["metrics"]["val_loss"]
    # the tiny preset's 8 validation windows are imprecise: the run says so and what would fix it
    worst = max(p["metrics"]["val_loss_se"] for p in rec["curve"])
    assert worst > 0.005
    need = math.ceil(rec["task_options"]["eval_batches"] * (worst / 0.005) ** 2)
    assert f"val_loss_se reached {worst:.4f} (> 0.005); --set eval_batches={need} " in res.output


def test_data_dir_from_environment(tmp_path: Path, shared_data: Path, monkeypatch) -> None:
    monkeypatch.setenv("BENCH_DATA_DIR", str(shared_data))
    res = invoke(
        "run",
        "--opt",
        "adamw",
        "--task",
        "lm-small",
        "--set",
        "preset=tiny",
        "--steps",
        "2",
        "--out",
        str(tmp_path),
        "--quiet",
    )
    assert res.exit_code == 0, res.output


def _nothing_written(path: Path) -> bool:
    return not path.exists() or not any(path.rglob("*"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--opt", "ademamx", "--task", "rosenbrock"], "Did you mean 'ademamix'?"),
        (["--opt", "adamw", "--task", "rosenbrok"], "Did you mean 'rosenbrock'?"),
        (["--opt", "adamw", "--task", "rosenbrock", "--set", "lrr=1"], "unknown key 'lrr'"),
        (["--opt", "adamw", "--task", "rosenbrock", "--set", "betas=[0.9, 1.5]"], "betas[1]"),
        (["--opt", "adamw", "--task", "rosenbrock", "--set", "lr=-1"], "lr must be"),
        (["--opt", "adamw", "--task", "rosenbrock", "--set", "steps=0"], "steps"),
        (
            ["--opt", "adamw", "--task", "rosenbrock", "--set", "ademamix.alpha=3"],
            "optimizers of this run",
        ),
        (["--opt", "adamw", "--task", "rosenbrock", "--set", "adamw.alpha=3"], "no hyperparameter"),
        (["--opt", "adamw", "--task", "rosenbrock", "--set", "novalue"], "key=value"),
        (["--opt", "adamw", "--task", "lm-small", "--set", "n_layer=zero"], "n_layer"),
        (
            ["--opt", "adamw", "--task", "lm-small", "--data", "/nonexistent/x.txt"],
            "does not exist",
        ),
        (["--opt", "adamw", "--task", "rosenbrock", "--data", "x.txt"], "reads no data"),
        (
            ["--opt", "adamw", "--task", "rosenbrock", "--plugin", "no_such_module_xyz"],
            "could not be imported",
        ),
        (["--opt", "adamw", "--task", "rosenbrock", "--device", "gpu"], "unknown device 'gpu'"),
        (["--opt", "adamw,adamw", "--task", "rosenbrock"], "names an optimizer twice"),
        (["--opt", "adamw", "--task", "rosenbrock", "--set", "target=nan"], "finite number"),
        (
            ["--opt", "adamw", "--task", "rosenbrock", "--set", "a=nan"],
            "option a: Input should be a finite number (got 'nan')",
        ),
        (
            ["--opt", "adamw", "--task", "noisy-quadratic", "--set", "noise=inf"],
            "option noise: Input should be a finite number (got 'inf')",
        ),
        (
            ["--opt", "adamw", "--task", "rosenbrock", "--compile", "--set", "compile=false"],
            "error: --compile and --set compile=False disagree; give one of them",
        ),
        (
            ["--opt", "adamw", "--task", "lm-small", "--data", "a.txt", "--set", "data=b.txt"],
            "error: --data a.txt and --set data=b.txt disagree; give one of them",
        ),
        (
            ["--opt", "adamw", "--task", "rosenbrock", "--set", "lr=-1"],
            "error: optimizer 'adamw': lr must be a finite number >= 0, got -1",
        ),
        (
            ["--opt", "adamw", "--task", "rosenbrock", "--set", "eval_interval=100000"],
            "eval_interval (100000) is larger than steps",
        ),
        (
            ["--opt", "adamw", "--task", "lm-small", "--set", "n_head=3", "--set", "n_embd=32"],
            "task 'lm-small' option: n_embd (32) must be divisible by n_head (3)",
        ),
        (
            ["--opt", "adamw", "--task", "lm-small", "--set", "preset=huge"],
            "option: unknown preset 'huge'; choose one of ['default', 'tiny']",
        ),
        (
            ["--opt", "adamw", "--task", "rosenbrock", "--set", "target=abc"],
            "run setting target: expected a finite number or 'calibrate' (got 'abc')",
        ),
        (
            [
                "--opt",
                "adamw",
                "--task",
                "lm-small",
                "--set",
                "preset=tiny",
                "--set",
                "probe_batch_step=20",
            ],
            "probe_batch_step (20) must be below steps",
        ),
        (["--opt", "adamw", "--task", "rosenbrock", "--seed", str(2**64)], "--seed must be"),
        (
            ["--opt", "adamw", "--task", "lm-small", "--set", "eval_batches=1", "--set",
             "batch_size=1"],
            "evaluation needs at least 2 validation windows",
        ),  # fmt: skip
    ],
)
def test_bad_input_one_line_nonzero_exit_no_files(tmp_path: Path, args, message) -> None:
    out = tmp_path / "out"
    res = invoke("run", *args, "--out", str(out), "--quiet")
    assert res.exit_code == 1
    assert message in res.output, res.output
    assert "Traceback" not in res.output
    assert _nothing_written(out)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_cuda_on_a_cpu_only_machine_is_refused_up_front(tmp_path: Path) -> None:
    res = invoke(
        "run",
        "--opt",
        "adamw",
        "--task",
        "rosenbrock",
        "--device",
        "cuda",
        "--out",
        str(tmp_path / "o"),
        "--quiet",
    )
    assert res.exit_code == 1 and "no CUDA GPU" in res.output
    assert _nothing_written(tmp_path / "o")


def test_unknown_name_lists_what_exists() -> None:
    res = invoke("show", "nope-nope")
    assert res.exit_code == 1 and "adamw" in res.output and "rosenbrock" in res.output
    res = invoke("show", "lion", "--task", "rosenbrok")  # a task is asked for: tasks alone
    assert res.exit_code == 1 and "no task named 'rosenbrok'. Did you mean 'rosenbrock'?" in (
        " ".join(res.output.split())
    )
    assert "Tasks: " in res.output and "adamw" not in res.output


def test_offline_without_local_copy_says_how_to_supply_the_file(
    tmp_path: Path, monkeypatch
) -> None:
    unreachable = RemoteFile("tinyshakespeare.txt", "http://127.0.0.1:9/input.txt", "0" * 64)
    monkeypatch.setattr("bench_cli.tasks.lm.tokens.TINY_SHAKESPEARE", unreachable)
    res = invoke(
        "run", "--opt", "adamw", "--task", "lm-small", "--out", str(tmp_path / "o"), "--quiet"
    )
    assert res.exit_code == 1
    assert "--data" in res.output and "BENCH_DATA_DIR" in res.output
    assert _nothing_written(tmp_path / "o")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_out(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        res = invoke(
            "run",
            "--opt",
            "adamw",
            "--task",
            "rosenbrock",
            "--out",
            str(locked / "sub"),
            "--steps",
            "5",
            "--quiet",
        )
        assert res.exit_code == 1 and "cannot write results" in res.output
        assert not (locked / "sub").exists()
    finally:
        locked.chmod(0o700)


def test_out_that_is_a_file_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = invoke(
        "run",
        "--opt",
        "adamw",
        "--task",
        "rosenbrock",
        "--out",
        str(blocker),
        "--steps",
        "5",
        "--quiet",
    )
    assert res.exit_code == 1 and "cannot write results" in res.output
    assert blocker.read_text() == "x"


def test_python_dash_m_works() -> None:
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, "-m", "bench_cli", "--version"], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0 and "bench" in res.stdout


@pytest.mark.parametrize("command", [["leaderboard"], ["export", "--format", "json"]])
def test_a_reader_that_leaves_ends_the_command_quietly(command) -> None:
    """``bench leaderboard DIR | head``: the pipe closes before the output is written; the
    command stops with SIGPIPE's status and says nothing (not a plug-in's sys.exit, no
    traceback)."""
    import subprocess
    import sys

    base = Path(__file__).resolve().parents[1] / "suites" / "baselines" / "ci-smoke"
    code = "import sys; from bench_cli.cli import main; sys.argv[0] = 'bench'; main()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, command[0], str(base), *command[1:]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader is gone before the first write
    assert proc.wait(timeout=120) == 141
    assert proc.stderr.read() == b""
