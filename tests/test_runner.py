"""The run loop: schedules, determinism, divergence, the clock, and the record it produces."""

from __future__ import annotations

import math

import pytest

from bench_cli import api
from bench_cli.config import RunSettings
from bench_cli.results.record import RunRecord
from bench_cli.results.store import read_record
from bench_cli.runner import lr_multiplier


def test_lr_schedule_warmup_then_cosine_to_min() -> None:
    s = RunSettings(steps=110, warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    assert lr_multiplier(0, s, True, True) == pytest.approx(0.1)
    assert lr_multiplier(9, s, True, True) == pytest.approx(1.0)
    assert lr_multiplier(10, s, True, True) == pytest.approx(1.0)
    assert lr_multiplier(60, s, True, True) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_multiplier(110, s, True, True) == pytest.approx(0.1)
    # an optimizer that owns its warmup gets no warmup from the loop
    assert lr_multiplier(0, s, False, True) == pytest.approx(1.0)
    # one that owns its whole schedule gets a constant lr
    assert lr_multiplier(60, s, False, False) == 1.0


def test_linear_schedule() -> None:
    s = RunSettings(steps=100, warmup_steps=0, schedule="linear", min_lr_ratio=0.0)
    assert lr_multiplier(50, s, True, True) == pytest.approx(0.5)


def _run(tmp_path, **kw) -> list[RunRecord]:
    req = api.RunRequest(**{"task": "rosenbrock", "optimizers": ["adamw"], **kw})
    return api.run(req, tmp_path)


def test_same_seed_gives_the_same_curve_on_cpu(tmp_path, shared_data) -> None:
    kw = dict(
        task="lm-small",
        optimizers=["ademamix"],
        sets=["preset=tiny"],
        seed=3,
        data=str(shared_data),
    )
    a = _run(tmp_path / "a", **kw)[0]
    b = _run(tmp_path / "b", **kw)[0]
    c = _run(tmp_path / "c", **{**kw, "seed": 4})[0]
    assert [p.metrics for p in a.curve] == [p.metrics for p in b.curve]
    assert a.run_id == b.run_id
    assert [p.metrics for p in a.curve] != [p.metrics for p in c.curve]


def test_huge_lr_is_recorded_as_diverged_not_a_crash(tmp_path) -> None:
    rec = _run(tmp_path, sets=["lr=1e100", "log_interval=1"], steps=50)[0]
    assert rec.status == "diverged"
    assert rec.steps_done < 50
    assert rec.tokens_to_target is None
    stored = read_record(tmp_path / f"{rec.run_id}.json")  # NaN metrics survive the round trip
    assert stored.status == "diverged" and stored.steps_done == rec.steps_done


def test_record_fields_and_resolved_hparams(tmp_path) -> None:
    rec = _run(tmp_path, optimizers=["ademamix"], steps=40, sets=["eval_interval=10"])[0]
    assert rec.status == "done" and rec.unit == "steps"
    assert [p.step for p in rec.curve] == [0, 10, 20, 30, 40]
    # horizons filled from the run length, every default present
    assert rec.hparams["alpha_warmup"] == 40 and rec.hparams["beta3_warmup"] == 40
    assert set(rec.hparams) >= {"lr", "betas", "alpha", "eps", "weight_decay"}
    assert rec.target.metric == "distance"
    assert rec.optimizer_state_bytes == 3 * 2 * 8  # m1, m2, v for one float64 (2,) tensor
    assert rec.param_groups[0].numel == 2
    assert rec.tokens_per_second and rec.tokens_per_second > 0
    assert rec.env.torch and rec.env.device == "cpu"
    stored = RunRecord.model_validate_json((tmp_path / f"{rec.run_id}.json").read_text())
    assert stored == rec


def test_rosenbrock_default_budget_reaches_the_target(tmp_path) -> None:
    recs = _run(tmp_path, optimizers=["adamw", "ademamix"])
    for rec in recs:
        assert rec.status == "done"
        assert rec.best_metrics["distance"] < 1e-2
        assert rec.steps_to_target is not None and rec.steps_to_target <= 3000
        # interpolated crossing lies between two evaluations and matches tokens for a steps task
        assert rec.tokens_to_target == pytest.approx(rec.steps_to_target)


def test_evaluation_time_is_not_on_the_training_clock(tmp_path, shared_data) -> None:
    rec = _run(
        tmp_path, task="lm-small", sets=["preset=tiny", "eval_batches=50"], data=str(shared_data)
    )[0]
    seconds = [p.seconds for p in rec.curve]
    assert seconds[0] == 0.0 and seconds == sorted(seconds)
    assert rec.eval_seconds > 0 and math.isclose(seconds[-1], rec.train_seconds)


def test_a_failure_while_building_the_model_is_an_error_record(tmp_path, monkeypatch) -> None:
    from bench_cli.tasks.valleys import Rosenbrock

    def broken(self):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(Rosenbrock, "build_model", broken)
    (rec,) = _run(tmp_path, steps=5)
    assert rec.status == "error" and "out of memory" in rec.error
    assert rec.steps_done == 0 and rec.optimizer_state_bytes == 0


def test_task_variants_are_told_apart(tmp_path) -> None:
    (tiny,) = _run(tmp_path, sets=["preset=tiny"], steps=20, seed=0)
    (far,) = _run(tmp_path, sets=["x0=-3.0"], steps=20, seed=0)
    (plain,) = _run(tmp_path, steps=20, seed=0)
    assert tiny.task_key == "rosenbrock(preset=tiny)"
    assert far.task_key == "rosenbrock(x0=-3.0)"
    assert plain.task_key == "rosenbrock"


def test_a_task_label_names_its_data_files_but_not_their_folders(tmp_path) -> None:
    from bench_cli.api import make_task, task_label

    data = tmp_path / "corpus.txt"
    data.write_text("hello world " * 100)
    task = make_task("lm-small", {"preset": "tiny", "data": str(data)})
    assert task_label(task) == "lm-small(preset=tiny,data=corpus.txt)"
    assert task_label(make_task("lm-small", {"preset": "tiny"})) == "lm-small(preset=tiny)"


def test_lookahead_batches_are_consumed_in_order(tmp_path, monkeypatch) -> None:
    """MARS exact trains on the same batch sequence as any other optimizer, drawn one ahead."""
    from bench_cli.tasks.valleys import Rosenbrock

    seen: list[int] = []

    def numbered(self, seed):
        n = 0
        while True:
            yield n
            n += 1

    def loss(self, model, batch):
        seen.append(batch)
        return self._value(model.xy)

    monkeypatch.setattr(Rosenbrock, "batches", numbered)
    monkeypatch.setattr(Rosenbrock, "loss", loss)
    _run(tmp_path, optimizers=["mars"], sets=["is_approx=false", "optimize_1d=true"], steps=5)
    # each step: the lookahead batch t+1, then the training batch t
    assert seen == [1, 0, 2, 1, 3, 2, 4, 3, 5, 4]
