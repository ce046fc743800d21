"""``torchrun --nproc-per-node 2 -m bench_cli ...``: one run trained by two gloo processes on the
CPU, through the same path as any command (claims, reused records, ``suite status``,
checkpoints, phases), against one process with the same global batch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_executors import PLUGINS, bench, comparable, records_in


def _lm(shared_data: Path, *extra: str) -> list[str]:
    """lm-small's tiny preset on the CPU, quiet."""
    data = str(shared_data / "tinyshakespeare.txt")
    return ["--task", "lm-small", "--set", "preset=tiny", "--device", "cpu", "--data", data, *extra]


def test_ddp_on_two_gloo_processes_matches_one_process_with_the_same_global_batch(
    tmp_path, shared_data
) -> None:
    import torch

    args = [
        "--plugin",
        str(PLUGINS),
        "--opt",
        "saving-adamw",
        "--task",
        "lm-small",
        "--set",
        "preset=tiny",
        "--set",
        "dropout=0",
        "--steps",
        "4",
        "--set",
        "eval_interval=2",
        "--device",
        "cpu",
        "--data",
        str(shared_data / "tinyshakespeare.txt"),
        "--quiet",
    ]
    ddp, one = tmp_path / "ddp", tmp_path / "one"
    ddp.mkdir()
    one.mkdir()
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "bench_cli",
            "run",
            *args,
            "--out",
            str(tmp_path / "out_ddp"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "BENCH_TEST_PARAMS": str(ddp)},
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    single = bench(
        "run", *args, "--out", str(tmp_path / "out_one"), env={"BENCH_TEST_PARAMS": str(one)}
    )
    assert single.returncode == 0, single.stderr
    r0, r1 = (torch.load(ddp / f"rank{r}.pt") for r in (0, 1))
    ref = torch.load(one / "rank0.pt")
    assert all(torch.equal(a, b) for a, b in zip(r0, r1))  # the ranks never drift apart
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(r0, ref))
    [rec] = records_in(tmp_path / "out_ddp").values()
    [rec1] = records_in(tmp_path / "out_one").values()
    assert rec.env.world_size == 2 and rec.tokens_done == rec1.tokens_done


def _kill_marked(mark: str) -> None:
    """SIGKILL every process whose command line holds ``mark`` (a launcher and its ranks)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if mark.encode() in cmdline.read_bytes().split(b"\0"):
                os.kill(int(cmdline.parent.name), signal.SIGKILL)
        except (OSError, ValueError):
            pass  # gone meanwhile


def _launch(args: list[str], env: dict | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    return subprocess.Popen(
        [*cmd, "-m", "bench_cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _torchrun(args: list[str], env: dict | None = None, timeout: float = 90, command: str = "run"):
    """``torchrun --nproc-per-node 2 -m bench_cli COMMAND ARGS`` on the CPU; on a hang (ranks
    waiting in different collectives) the launcher and its ranks are killed and the test fails.
    ARGS must hold a path of the test's own (its --out): the ranks are found by it."""
    proc = _launch([*command.split(), *args], env)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_marked(args[args.index("--out") + 1])
        proc.communicate()
        pytest.fail(f"torchrun still ran after {timeout:g} s")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("how", ["raises", "calls sys.exit"])
def test_a_run_that_fails_on_one_ddp_rank_ends_the_command_with_its_record(
    tmp_path, shared_data, how
) -> None:
    """Rank 1 fails while rank 0 waits for it in a collective: the command ends at once, non-zero,
    and the record names rank 1's cause (not rank 0's lost connection)."""
    env = {**os.environ, **({"BENCH_TEST_EXIT": "1"} if how == "calls sys.exit" else {})}
    res = _torchrun(
        [
            "--plugin", str(PLUGINS), "--opt", "adamw", "--task", "rank-one-failing-lm", "--set",
            "preset=tiny", "--steps", "8", "--device", "cpu", "--data",
            str(shared_data / "tinyshakespeare.txt"), "--quiet", "--out", str(tmp_path / "out"),
        ],
        env,
    )  # fmt: skip
    assert res.returncode != 0
    assert "adamw failed on rank 1:" in res.stderr
    [rec] = records_in(tmp_path / "out").values()
    assert rec.status == "error" and rec.steps_done == 2
    first = (
        "SystemExit: 3 (the task's" if how == "calls sys.exit" else "RuntimeError: boom on rank 1"
    )
    assert rec.error.startswith(first)


def test_rank_zeros_clock_ends_a_max_seconds_run_on_every_rank(tmp_path, shared_data) -> None:
    """Rank 1's clock is far ahead: were each rank to read its own, rank 1 would stop to evaluate
    (a broadcast) at the first log point while rank 0 trained on (an all-reduce), and the two
    would wait on each other. Rank 0's clock, under the limit, decides for both."""
    out = tmp_path / "out"
    lm = [*_lm(shared_data, "--steps", "6", "--set", "log_interval=1", "--set", "eval_interval=3")]
    lm[lm.index("lm-small")] = "fast-clock-rank-one-lm"
    args = ["--plugin", str(PLUGINS), "--opt", "adamw", *lm, "--set", "max_seconds=600"]
    res = _torchrun([*args, "--quiet", "--out", str(out)])
    assert res.returncode == 0, res.stderr[-3000:]
    [rec] = records_in(out).values()
    assert rec.status == "done" and rec.steps_done == 6 and rec.env.world_size == 2
    assert [p.step for p in rec.curve] == [0, 3, 6]


def test_the_other_ranks_wait_for_rank_zero_between_cells_past_the_collectives_deadline(
    tmp_path, shared_data
) -> None:
    """Rank 0 prepares the task's data for longer than a training collective may take (set to
    4 s here; NCCL's is 10 minutes): the other ranks wait for its first cell all that time and
    the run trains to the end."""
    out = tmp_path / "out"
    lm = _lm(shared_data, "--steps", "4")
    lm[lm.index("lm-small")] = "slow-rank-zero-lm"
    env = {**os.environ, "BENCH_TEST_PG_TIMEOUT": "4", "BENCH_TEST_SLOW": "8"}
    res = _torchrun(
        ["--plugin", str(PLUGINS), "--opt", "adamw", *lm, "--quiet", "--out", str(out)], env
    )
    assert res.returncode == 0, res.stderr[-3000:]
    [rec] = records_in(out).values()
    assert rec.status == "done" and rec.steps_done == 4 and rec.env.world_size == 2


@pytest.mark.parametrize(
    "problem", ["a valley task", "a suite folder", "executor options", "a batch of 3"]
)
def test_torchrun_refuses_what_it_cannot_run_before_training(tmp_path, shared_data, problem):
    from bench_cli.folder import RESOLVED

    out = tmp_path / "out"
    task = ["--task", "lm-small", "--set", "preset=tiny", "--data"]
    task.append(str(shared_data / "tinyshakespeare.txt"))
    if problem == "a valley task":
        task = ["--task", "rosenbrock"]
    elif problem == "executor options":
        task += ["--jobs", "2"]
    elif problem == "a batch of 3":
        task += ["--set", "batch_size=3"]
    else:
        out.mkdir()
        (out / RESOLVED).write_text("name: s\n")
    res = _torchrun(
        ["--opt", "adamw", *task, "--steps", "4", "--device", "cpu", "--quiet", "--out", str(out)]
    )
    assert res.returncode != 0
    why = {
        "a valley task": "error: task 'rosenbrock' does not train under torchrun",
        "a suite folder": "holds a suite run",
        "executor options": "leave out the executor options (--jobs)",
        "a batch of 3": "its global batch of 3 does not split over 2 ranks; set batch_size",
    }[problem]
    assert res.stderr.count(why) == 1  # said once, by rank 0
    assert not out.exists() or [p.name for p in out.iterdir()] == [RESOLVED]


def test_a_dry_run_under_torchrun_shows_the_plan_once(tmp_path, shared_data) -> None:
    out = tmp_path / "out"
    res = _torchrun(["--opt", "adamw,lion", *_lm(shared_data, "--dry-run"), "--out", str(out)])
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("2 cells in all (0 tune, 0 calibrate, 2 score)") == 1, res.stdout
    assert res.stdout.count("  adamw  seed 0") == 1 and res.stdout.count("  lion  seed 0") == 1
    assert not out.exists()


def _versions(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.glob("*.json")}


def test_a_torchrun_run_is_claimed_reused_and_seen_by_suite_status(tmp_path, shared_data) -> None:
    out = tmp_path / "out"
    lm = _lm(shared_data, "--steps", "4", "--set", "eval_interval=2", "--quiet")
    args = ["--opt", "adamw,lion", *lm, "--out", str(out)]
    first = _torchrun(args)
    assert first.returncode == 0, first.stderr[-3000:]
    records = records_in(out).values()
    assert sorted(r.optimizer for r in records) == ["adamw", "lion"]
    assert all(r.env.world_size == 2 and r.status == "done" for r in records)
    assert len(list((out / ".runs").glob("*.yaml"))) == 1  # the one-task suite it ran
    assert not list((out / ".running").iterdir())  # each cell was claimed, then released
    status = bench("suite", "status", str(out))
    assert status.returncode == 0, status.stderr
    assert "2 done, 0 diverged, 0 failed, 0 running, 0 interrupted, 0 missing" in status.stdout
    before = _versions(out)
    again = _torchrun(args)
    assert again.returncode == 0 and "reused 2 records" in again.stderr
    assert _versions(out) == before
    rerun = _torchrun([*args, "--rerun"])
    assert rerun.returncode == 0 and "reused" not in rerun.stderr
    after = _versions(out)
    assert sorted(after) == sorted(before) and all(after[k] != before[k] for k in before)


def test_a_suite_under_torchrun_runs_every_phase_as_one_process_plans_them(tmp_path, shared_data):
    """Tuning, calibration and scoring under torchrun: every cell trained by both ranks, and a
    run of the same suite in one process afterwards finds every cell done (the same plan)."""
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: ddp-suite\nbaseline: adamw\nseeds: [0]\ndevice: cpu\n"
        "tuning: {budget: unequal}\ntasks:\n  - name: lm-small\n    options: {preset: tiny}\n"
        "    budget: {steps: 4, eval_interval: 2}\n    target: calibrate\noptimizers:\n"
        "  - name: adamw\n    sweep: {lr: [1.0e-3, 3.0e-3]}\n  - name: lion\n"
    )
    out = tmp_path / "out"
    env = {**os.environ, "BENCH_DATA_DIR": str(shared_data)}
    res = _torchrun([str(path), "--out", str(out), "--quiet"], env, command="suite run")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "5 runs now, 0 already done" in res.stderr
    records = records_in(out).values()
    assert sorted(r.role for r in records) == ["calibrate", "score", "score", "tune", "tune"]
    assert all(r.env.world_size == 2 and r.status == "done" for r in records)
    again = bench("suite", "run", str(path), "--out", str(out), "--quiet", env=env)
    assert again.returncode == 0 and "0 runs now, 5 already done" in again.stderr


def test_a_ddp_run_killed_after_a_checkpoint_resumes_to_the_uninterrupted_record(
    tmp_path, shared_data
) -> None:
    # the first checkpoint comes at step 5, and 100 steps take seconds more: the kill lands first
    lm = _lm(shared_data, "--steps", "100", "--set", "eval_interval=5", "--set", "eval_batches=1")
    args = ["--opt", "ademamix", *lm, "--set", "checkpoint_minutes=1e-9", "--quiet"]
    out = tmp_path / "killed"
    proc = _launch(["run", *args, "--out", str(out)])
    ckpt_dir = out / ".checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and not (ckpt_dir.is_dir() and any(ckpt_dir.glob("*.pt"))):
        time.sleep(0.005)
    _kill_marked(str(out))  # the launcher and both ranks
    proc.communicate()
    assert not list(out.glob("*.json")), "the run finished before it could be killed"
    import torch

    saved = torch.load(next(ckpt_dir.glob("*.pt")), weights_only=True)
    assert 0 < saved["step"] < 100
    resumed = _torchrun([*args, "--out", str(out)], timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    clean = _torchrun([*args, "--out", str(tmp_path / "clean")], timeout=300)
    assert clean.returncode == 0, clean.stderr[-3000:]
    [a], [b] = records_in(out).values(), records_in(tmp_path / "clean").values()
    assert a.env.world_size == 2 and a.steps_done == 100
    assert comparable(a) == comparable(b)
    assert not list(ckpt_dir.glob("*.pt"))  # removed once the record exists
