"""``bench perf loop``: the command's output, and the bare loop as a fair yardstick."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from bench_cli import perf_loop, runner
from bench_cli.cli import app
from bench_cli.errors import ConfigError

TINY = ["preset=tiny"]


def test_bare_loop_trains_the_same_model_on_the_same_batches(shared_data):
    """Same seed, no dropout: the run loop and the hand-written loop (its own text encoding,
    batch draws, schedule and torch's AdamW) log the same losses step for step. A different
    seed changes them, so the agreement is not a property of any two runs."""
    data = str(shared_data / "tinyshakespeare.txt")
    sets = [*TINY, "log_interval=2", "eval_interval=12"]
    task, spec = perf_loop.plan("lm-small", 24, "cpu", data, sets)
    assert task.options.dropout == 0.0
    device = torch.device("cpu")
    task.prepare(device)
    record = runner.run(spec, task, device)
    bench = {p.step: p.loss for p in record.train_curve}

    bare = perf_loop.load_bare_loop()
    cfg = perf_loop.bare_config(bare, task, spec)
    assert not cfg.decay_embeddings  # lm-small leaves embeddings undecayed; lm-medium does not
    out = bare.train(cfg, perf_loop.text_path(task), device)
    assert sorted(out["losses"]) == sorted(bench) == list(range(2, 25, 2))
    for step, loss in bench.items():
        assert out["losses"][step] == pytest.approx(loss, abs=1e-4), step
    assert bench[24] < bench[2] - 0.2  # it trained

    cfg.seed = 1
    other = bare.train(cfg, perf_loop.text_path(task), device)
    assert abs(other["losses"][24] - bench[24]) > 1e-3


def test_bare_loop_matches_nanogpt_decay_of_lm_medium(shared_data):
    task, spec = perf_loop.plan(
        "lm-medium", 4, "cpu", str(shared_data / "tinyshakespeare.txt"), TINY
    )
    task.prepare(torch.device("cpu"))
    cfg = perf_loop.bare_config(perf_loop.load_bare_loop(), task, spec)
    assert cfg.decay_embeddings and cfg.dropout == task.options.dropout == 0.2
    assert not cfg.autocast  # bf16 autocast on CUDA only


def test_bare_lr_schedule_is_the_run_loops():
    bare = perf_loop.load_bare_loop()
    from bench_cli.config import RunSettings

    for schedule in ("cosine", "linear", "constant"):
        s = RunSettings(steps=40, warmup_steps=5, schedule=schedule, min_lr_ratio=0.1)
        cfg = bare.BareConfig(steps=40, warmup_steps=5, schedule=schedule, min_lr_ratio=0.1)
        for it in range(40):
            expected = runner.lr_multiplier(it, s, warmup=True, decay=True)
            assert bare.lr_mult(it, cfg) == pytest.approx(expected, abs=1e-12)


def test_perf_loop_command_json(shared_data):
    data = str(shared_data / "tinyshakespeare.txt")
    args = ["perf", "loop", "--task", "lm-small", "--steps", "12", "--device", "cpu"]
    args += ["--data", data, "--set", "preset=tiny", "--threads", "1", "--format", "json"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    r = json.loads(res.output)
    assert r["task"] == "lm-small" and r["steps"] == 12 and r["steps_timed"] == 11
    assert r["threads"] == 1 and r["rounds"] == 2
    assert len(r["bench_rounds_tokens_per_second"]) == len(r["bare_rounds_tokens_per_second"]) == 2
    for key in ("bench_tokens_per_second", "bare_tokens_per_second", "startup_seconds"):
        assert r[key] > 0
    assert r["ratio"] == pytest.approx(r["bench_tokens_per_second"] / r["bare_tokens_per_second"])
    assert r["eval_share"] == pytest.approx(r["eval_seconds"] / r["train_seconds"])
    # steps 12, tiny preset evaluates every 10 steps: at 0, 10 and 12, in each of two rounds
    assert r["evaluations"] == 6 and r["eval_interval"] == 10
    # the tiny preset's default run: 20 steps, evaluations at 0, 10 and 20 (hand count)
    assert perf_loop.evaluations_in(20, 10) == 3 and perf_loop.evaluations_in(12, 10) == 3
    per_eval, per_step = r["eval_seconds"] / 6, r["train_seconds"] / 22
    assert r["eval_share_default_run"] == pytest.approx(3 * per_eval / (20 * per_step))
    st = r["startup"]
    assert st["startup_seconds"] == pytest.approx(
        st["wall_seconds"] - st["eval_seconds"] - st["train_seconds"]
    )
    assert st["wall_seconds"] > st["startup_seconds"] >= st["setup_seconds"] > 0
    assert r["bench_losses"] == pytest.approx(r["bare_losses"], abs=1e-4)


def test_perf_loop_table(shared_data):
    args = ["perf", "loop", "--task", "lm-small", "--steps", "3", "--device", "cpu", "--data"]
    args += [str(shared_data / "tinyshakespeare.txt"), "--set", "preset=tiny", "--no-startup"]
    res = CliRunner().invoke(app, [*args, "--rounds", "1"])
    assert res.exit_code == 0, res.output
    for label in ("bench run tokens/s", "bare loop tokens/s", "ratio", "evaluation share"):
        assert label in res.output
    assert "start-up" not in res.output.split("|", 1)[1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--task", "rosenbrock"], "not one"),
        (["--task", "lm-small", "--steps", "1"], "greater than or equal to 2"),
        (["--task", "lm-small", "--set", "probe_batch_step=1"], "probe_batch_step"),
        (["--task", "lm-small", "--set", "max_seconds=0.2"], "drop --set max_seconds"),
        (
            [
                "--task",
                "lm-small",
                "--set",
                "preset=tiny",
                "--steps",
                "5",
                "--rounds",
                "1",
                "--no-startup",
                "--set",
                "opt.lr=1e10",
            ],
            "error: the run loop diverged (its loss became NaN or inf): a timing needs a run that "
            "trains; lower lr",
        ),
    ],
)
def test_perf_loop_refuses(args, message, shared_data):
    data = ["--data", str(shared_data / "tinyshakespeare.txt")] if "lm-small" in args else []
    res = CliRunner().invoke(app, ["perf", "loop", *args, "--device", "cpu", *data])
    assert res.exit_code != 0
    assert message in res.output


def test_plan_refuses_one_step_and_shards(shared_data, tmp_path):
    data = str(shared_data / "tinyshakespeare.txt")
    with pytest.raises(ConfigError, match="at least 2"):
        perf_loop.plan("lm-small", 1, "cpu", data, TINY)
    (tmp_path / "x_train.bin").write_bytes(b"")
    with pytest.raises(ConfigError, match="text files only"):
        perf_loop.plan("lm-small", 5, "cpu", str(tmp_path), TINY)
