"""Every registered optimizer runs through the CLI on every small task, and the runner honours
what each optimizer declares (train/eval modes, its own schedule, the lookahead gradient)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench_cli import api
from bench_cli.cli import app
from bench_cli.registry import OPTIMIZERS

BUILTINS = [
    "adamw",
    "ademamix",
    "simplified-ademamix",
    "aggmo-adam",
    "lion",
    "schedule-free",
    "mars",
]


def test_all_seven_optimizers_are_registered() -> None:
    assert set(BUILTINS) <= set(OPTIMIZERS.names())


@pytest.mark.parametrize("task", ["rosenbrock", "lm-small"])
def test_every_optimizer_runs_a_few_steps_through_the_cli(
    task, tmp_path: Path, shared_data: Path
) -> None:
    args = [
        "run",
        "--opt",
        ",".join(BUILTINS),
        "--task",
        task,
        "--set",
        "preset=tiny",
        "--steps",
        "6",
        "--set",
        "eval_interval=3",
        "--out",
        str(tmp_path),
        "--quiet",
    ]
    if task == "lm-small":
        args += ["--data", str(shared_data)]
    res = CliRunner().invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    records = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert sorted(r["optimizer"] for r in records) == sorted(BUILTINS)
    for r in records:
        assert r["status"] == "done", (r["optimizer"], r["error"])
        assert [p["step"] for p in r["curve"]] == [0, 3, 6]
        assert r["optimizer_state_bytes"] > 0
        assert sum(g["numel"] for g in r["param_groups"]) > 0


def test_record_lists_parameter_groups_with_the_task_convention(tmp_path, shared_data) -> None:
    req = api.RunRequest(
        task="lm-small", optimizers=["mars"], sets=["preset=tiny"], steps=2, data=str(shared_data)
    )
    (rec,) = api.run(req, tmp_path)
    groups = {g.name: g for g in rec.param_groups}
    assert groups["no_decay"].weight_decay == 0.0  # biases, norms, embeddings
    assert groups["decay"].numel > 0 and groups["no_decay"].numel > 0


def test_horizon_hparams_filled_from_run_length_unless_set(tmp_path) -> None:
    req = api.RunRequest(
        task="rosenbrock",
        optimizers=["ademamix", "simplified-ademamix"],
        steps=30,
        sets=["ademamix.alpha_warmup=7"],
    )
    recs = {r.optimizer: r for r in api.run(req, tmp_path)}
    assert recs["ademamix"].hparams["alpha_warmup"] == 7
    assert recs["ademamix"].hparams["beta3_warmup"] == 30
    assert recs["simplified-ademamix"].hparams["beta1_warmup"] == 30


def test_schedule_free_is_evaluated_at_x_and_owns_its_warmup(tmp_path, monkeypatch) -> None:
    from bench_cli.registry.schedule_free import ScheduleFreeAdamW

    modes = []
    real_eval = ScheduleFreeAdamW.eval

    def spy_eval(self):
        modes.append(self.param_groups[0]["train_mode"])
        return real_eval(self)

    monkeypatch.setattr(ScheduleFreeAdamW, "eval", spy_eval)
    req = api.RunRequest(
        task="rosenbrock",
        optimizers=["schedule-free"],
        steps=20,
        sets=["eval_interval=10", "run.warmup_steps=5", "schedule=cosine"],
    )
    (rec,) = api.run(req, tmp_path)
    assert rec.status == "done"
    assert len(modes) == 3 and all(modes)  # switched from train to eval for each evaluation
    assert rec.hparams["warmup_steps"] == 5  # the run's warmup goes to the optimizer


def test_mars_exact_variant_gets_the_lookahead_gradient(tmp_path, shared_data) -> None:
    req = api.RunRequest(
        task="lm-small",
        optimizers=["mars"],
        steps=4,
        data=str(shared_data),
        sets=["preset=tiny", "is_approx=false", "eval_interval=2"],
    )
    (rec,) = api.run(req, tmp_path)
    assert rec.status == "done", rec.error
    assert rec.hparams["is_approx"] is False


def test_probe_curve_is_aligned_for_an_optimizer_that_draws_ahead(tmp_path, shared_data) -> None:
    req = api.RunRequest(
        task="lm-small",
        optimizers=["adamw", "mars"],
        steps=10,
        data=str(shared_data),
        sets=["preset=tiny", "probe_batch_step=5", "eval_interval=5", "mars.is_approx=false"],
    )
    steps = {r.optimizer: [p.step for p in r.probe_curve] for r in api.run(req, tmp_path)}
    # recorded before the injection (steps 0 and 5) and after it: the batch is trained at step 6
    assert steps == {"adamw": [0, 5, 10], "mars": [0, 5, 10]}
