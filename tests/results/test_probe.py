"""The forgetting probe's table (``bench probe``): excess by hand, pairing, the p-value's size."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from bench_cli.cli_results import register
from bench_cli.errors import BenchError
from bench_cli.results import probe
from bench_cli.results.record import EvalPoint
from tests.results import make_record, write_all

runner = CliRunner()
K = 30  # the probe batch replaces batch 31


def probed(optimizer: str, seed: int, kept: float, lr: float = 1e-3):
    """A run whose probe sits 0.5 above the validation loss up to step K and ``kept`` below that
    afterwards, fading linearly to nothing at step 100; the validation loss itself falls."""
    r = make_record("lm", optimizer, seed, 4000.0, hparams={"lr": lr})
    points = []
    for p in r.curve:
        val = p.metrics["val_loss"]
        gain = 0.0 if p.step <= K else kept * (100 - p.step) / (100 - K)
        points.append(
            EvalPoint(
                step=p.step, tokens=p.tokens, seconds=p.seconds,
                metrics={"val_loss": val, "probe_loss": val + 0.5 - gain},
            )
        )  # fmt: skip
    return r.model_copy(
        update={"curve": points, "probe_curve": points, "task_options": {"probe_batch_step": K}}
    )


def test_excess_is_the_probe_gap_less_the_gap_before_injection() -> None:
    r = probed("adamw", 0, kept=0.7)
    e = probe.excess(r, [10, 20, 35, probe.END])
    # evaluations every 10 steps: +10 is step 40, +20 step 50, +35 the first at or after 65: 70
    assert e[10] == (pytest.approx(-0.7 * 60 / 70), 40)
    assert e[20] == (pytest.approx(-0.7 * 50 / 70), 50)
    assert e[35] == (pytest.approx(-0.7 * 30 / 70), 70)
    assert e[probe.END] == (pytest.approx(0.0, abs=1e-12), 100)
    value, step = probe.excess(r, [200])[200]  # later than the run
    assert math.isnan(value) and step == -1


def test_table_pairs_seeds_with_the_baseline_and_counts_those_below() -> None:
    records = []
    for seed in range(6):
        records.append(probed("adamw", seed, kept=0.2 + 0.01 * seed))
        records.append(probed("keeper", seed, kept=0.4 + 0.01 * seed))  # keeps more on every seed
        records.append(
            probed("mixed", seed, kept=0.2 + 0.01 * seed + (0.05 if seed < 3 else -0.05))
        )
    df = probe.table(records, "adamw", after=[10])
    row = df[(df.optimizer == "keeper") & (df.after == 10)].iloc[0]
    # median over seeds of -kept * 60/70: kept's median is 0.425
    assert row.excess == pytest.approx(-0.425 * 60 / 70)
    assert (row.below, row.pairs, row.seeds, row.step) == (6, 6, 6, K + 10)
    assert row.p == pytest.approx(2 / 64)  # every seed on one side: the smallest p of six pairs
    mixed = df[(df.optimizer == "mixed") & (df.after == 10)].iloc[0]
    assert (mixed.below, mixed.pairs) == (3, 6)
    assert mixed.p == pytest.approx(1.0)  # three up, three down by the same amount
    base = df[df.optimizer == "adamw"]
    assert base.p.isna().all() and list(base.after) == [10, probe.END]
    assert base.pairs.isna().all() and (df.runs == 6).all()


def test_an_offset_between_evaluations_is_reported_at_the_evaluation_used() -> None:
    """Evaluations every 10 steps: +5 and +10 both read step 40, so one column, +10; +15
    reads step 50 and says +20."""
    records = [probed(o, s, 0.3) for o in ("adamw", "x") for s in range(2)]
    df = probe.table(records, "adamw", after=[5, 10, 15])
    assert list(df[df.optimizer == "x"].after) == [10, 20, probe.END]
    assert list(df[df.optimizer == "x"].step) == [40, 50, 100]


def test_a_diverged_run_counts_until_its_last_finite_evaluation() -> None:
    records = [probed(o, s, 0.3) for o in ("adamw", "x") for s in range(3)]
    cut = records[3]  # x, seed 0: diverged after step 50
    curve = [
        p if p.step <= 50 else p.model_copy(update={"metrics": {"val_loss": math.inf}})
        for p in cut.curve
    ]
    records[3] = cut.model_copy(update={"status": "diverged", "curve": curve, "probe_curve": curve})
    df = probe.table(records, "adamw", after=[10, 40])
    x = df[df.optimizer == "x"].set_index("after")
    assert (x.loc[10, "seeds"], x.loc[10, "pairs"]) == (3, 3)  # step 40: before it diverged
    assert (x.loc[40, "seeds"], x.loc[40, "runs"], x.loc[40, "pairs"]) == (2, 3, 2)
    # its last finite evaluation (step 50) is not the end (step 100): left out there too
    assert (x.loc[probe.END, "step"], x.loc[probe.END, "seeds"]) == (100, 2)
    assert "[2 of 3 runs]" in probe.to_markdown(df, "adamw")


def test_runs_of_one_task_with_different_probe_steps_are_refused() -> None:
    records = [probed("adamw", s, 0.3) for s in range(2)]
    other = probed("x", 0, 0.3)
    records.append(other.model_copy(update={"task_options": {"probe_batch_step": 50}}))
    with pytest.raises(BenchError, match="different steps .30, 50."):
        probe.table(records, "adamw")


def test_probe_runs_only_in_tuning_say_so() -> None:
    records = [probed("adamw", s, 0.3).model_copy(update={"role": "tune"}) for s in range(2)]
    with pytest.raises(BenchError, match="tuning or calibration runs only"):
        probe.table(records, "adamw")
    none = probed("adamw", 0, 0.3).model_copy(update={"task_options": {"probe_batch_step": None}})
    with pytest.raises(BenchError, match="no scoring run with a forgetting probe"):
        probe.table([none], "adamw")


def test_only_the_kept_configuration_enters_the_table() -> None:
    records = [probed("adamw", s, 0.2) for s in range(6)]
    records += [probed("other", s, 0.3) for s in range(6)]
    # a second configuration of "other" with a worse best val_loss: not the one kept
    worse = [probed("other", s, 9.0, lr=1e-2) for s in range(6)]
    worse = [
        r.model_copy(update={"best_metrics": {"val_loss": 5.0}, "run_id": r.run_id + "x"})
        for r in worse
    ]
    df = probe.table(records + worse, "adamw", after=[10])
    row = df[(df.optimizer == "other") & (df.after == 10)].iloc[0]
    assert row.excess == pytest.approx(-0.3 * 60 / 70) and row.seeds == 6


@pytest.mark.parametrize("n", [6, 8, 10])
def test_two_sided_p_rejects_a_true_null_at_most_at_its_level(n: int) -> None:
    """Symmetric differences (no optimizer keeps more): p <= 0.05 at most 5% of the time, within
    three binomial standard errors, for normal and heavy-tailed noise."""
    rng = np.random.default_rng(n)
    trials = 3000
    for draw in (rng.standard_normal, rng.standard_cauchy):
        rate = np.mean([probe.two_sided_p(draw(n)) <= 0.05 for _ in range(trials)])
        assert rate <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / trials)


def test_two_sided_p_finds_a_clear_difference() -> None:
    rng = np.random.default_rng(1)
    rate = np.mean([probe.two_sided_p(rng.standard_normal(8) - 2.0) <= 0.05 for _ in range(500)])
    assert rate >= 0.9


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_probe_command_prints_markdown_and_writes_json(app, tmp_path: Path) -> None:
    folder = write_all(
        tmp_path / "runs", [probed(o, s, 0.3) for o in ("adamw", "x") for s in (0, 1)]
    )
    result = runner.invoke(app, ["probe", str(folder), "--after", "20,10,20"])
    assert result.exit_code == 0, result.output
    assert "probe batch in place of batch 31" in result.output
    assert "| optimizer | +10 | +20 | end (step 100) |" in result.output  # sorted, once each
    out = tmp_path / "probe.json"
    result = runner.invoke(app, ["probe", str(folder), "--format", "json", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["probe"]
    assert {r["optimizer"] for r in rows} == {"adamw", "x"}
    assert all(r["p"] is None for r in rows if r["optimizer"] == "adamw")
    assert all(isinstance(r["pairs"], int) for r in rows if r["optimizer"] == "x")
    # written into the records' folder, the table is not taken for a damaged record
    inside = folder / "probe.json"
    args = ["probe", str(folder), "--format", "json", "--out", str(inside)]
    assert runner.invoke(app, args).exit_code == 0
    assert runner.invoke(app, ["probe", str(folder)]).exit_code == 0
    folder_out = runner.invoke(app, ["probe", str(folder), "--out", str(folder)])
    assert folder_out.exit_code != 0 and "is a folder; give a file name" in folder_out.output


@pytest.mark.parametrize(
    ("records", "args", "message"),
    [
        ([make_record()], [], "no scoring run with a forgetting probe"),
        ([probed("adamw", 0, 0.3)], ["--after", "ten"], "whole numbers"),
        ([probed("adamw", 0, 0.3)], ["--after", "0"], "positive"),
        ([probed("adamw", 0, 0.3)], ["--format", "latex"], "unknown format"),
        ([make_record()], ["--format", "latex"], "unknown format"),  # before reading anything
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(app, tmp_path, records, args, message) -> None:
    folder = write_all(tmp_path / "runs", records)
    out = tmp_path / "probe.md"
    result = runner.invoke(app, ["probe", str(folder), "--out", str(out), *args])
    assert result.exit_code != 0
    assert message in result.output and not out.exists()
