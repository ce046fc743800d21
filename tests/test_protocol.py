"""The protocol's rules, each against a hand-computed expectation: tune on the tuning seeds, score
the selected configuration on the scoring seeds, seeds per phase, selection by time to target,
the calibrated target and the rescoring of tuning runs, equal budgets, seed-independent tasks.
Rosenbrock and the noisy quadratic (tiny presets, a few dozen steps) keep every suite small."""

from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path

import pytest

from bench_cli import suite
from bench_cli.config import parse_suite
from bench_cli.errors import BenchError, ConfigError
from bench_cli.plan import build_plan, phase_seeds
from bench_cli.results.record import RunRecord

NQ = "noisy-quadratic(preset=tiny)"
ROSEN = "rosenbrock(preset=tiny)"


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def crossing(record: RunRecord, value: float) -> float | None:
    """Where the evaluated metric first reaches ``value`` (a metric to minimise), interpolated
    linearly between the two evaluations around it; None if it never does."""
    metric = record.target.metric
    points = [(p.tokens, p.metrics[metric]) for p in record.curve]
    for (t0, m0), (t1, m1) in zip(points, points[1:]):
        if m0 <= value:
            return float(t0)
        if m1 <= value:
            return t0 + (t1 - t0) * (m0 - value) / (m0 - m1)
    return None


def by_role(records: list[RunRecord], role: str) -> list[RunRecord]:
    return [r for r in records if r.role == role]


# -- seeds per phase ----------------------------------------------------------------------------


def seeds_of(text: str) -> dict[str, list[int]]:
    return phase_seeds(
        parse_suite("tasks: [{name: rosenbrock}]\noptimizers: [{name: adamw}]\n" + text)
    )


def test_tuning_seeds_default_above_the_scoring_seeds_and_calibration_seeds_above_both() -> None:
    # tuning: [max(seeds) + 1]; calibration: len(seeds) seeds above every other seed
    assert seeds_of("seeds: [0, 1, 2]") == {"score": [0, 1, 2], "tune": [3], "calibrate": [4, 5, 6]}
    assert seeds_of("seeds: [7, 2]") == {"score": [7, 2], "tune": [8], "calibrate": [9, 10]}
    assert seeds_of("seeds: [0, 1]\ntuning: {seeds: [10, 11]}") == {
        "score": [0, 1],
        "tune": [10, 11],
        "calibrate": [12, 13],
    }
    got = seeds_of("seeds: [0]\ntuning: {seeds: [5], calibration_seeds: [1, 2, 3]}")
    assert got == {"score": [0], "tune": [5], "calibrate": [1, 2, 3]}


@pytest.mark.parametrize(
    "tuning, message",
    [
        ("{seeds: [4, 1]}", "tuning.seeds and seeds share seed 1"),
        ("{calibration_seeds: [2, 0]}", "tuning.calibration_seeds and seeds share seed 0"),
        (
            "{seeds: [5], calibration_seeds: [6, 5]}",
            "tuning.calibration_seeds and tuning.seeds share seed 5",
        ),
        ("{calibration_seeds: [3]}", "tuning.calibration_seeds and tuning.seeds share seed 3"),
    ],
)
def test_overlapping_seeds_are_refused_with_one_line(tuning: str, message: str) -> None:
    text = f"""
seeds: [0, 1, 2]
tuning: {tuning}
tasks: [{{name: rosenbrock, options: {{preset: tiny}}}}]
optimizers: [{{name: adamw}}]
"""
    with pytest.raises(ConfigError) as info:
        build_plan(parse_suite(text, "f.yaml"))
    assert str(info.value) == (
        f"tuning: {message}: scoring seeds must be fresh; choose disjoint seeds"
    )


# -- the phases ---------------------------------------------------------------------------------

NQ_SUITE = """
seeds: [0, 1]
tasks:
  - name: noisy-quadratic
    options: {preset: tiny}
    budget: {steps: 20, eval_interval: 10}
optimizers:
  - name: adamw
    sweep: {lr: [0.03, 0.1]}
  - name: lion
    sweep: {lr: [0.003, 0.01]}
executor: {threads: 1}  # one thread per run: fast on a loaded machine
"""


def test_tune_runs_every_configuration_on_the_tuning_seed_then_the_selected_one_is_scored(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    summary = suite.run_suite(write(tmp_path, NQ_SUITE), out=out)
    tune, score = by_role(summary.records, "tune"), by_role(summary.records, "score")
    assert len(summary.records) == 8 and summary.ran == 8
    assert by_role(summary.records, "calibrate") == []
    # tuning: 2 configurations x 2 optimizers on seed max([0, 1]) + 1 = 2 only
    assert sorted((r.optimizer, r.config["lr"], r.seed) for r in tune) == [
        ("adamw", 0.03, 2), ("adamw", 0.1, 2), ("lion", 0.003, 2), ("lion", 0.01, 2),
    ]  # fmt: skip
    assert all(r.hparams["lr"] == r.config["lr"] for r in tune)
    # scoring: each optimizer's selected configuration, on the scoring seeds only
    selection = json.loads((out / "selection.json").read_text())
    assert set(selection) == {f"{NQ}/adamw", f"{NQ}/lion"} and selection == summary.selection
    for opt in ("adamw", "lion"):
        mine = [r for r in score if r.optimizer == opt]
        assert sorted(r.seed for r in mine) == [0, 1]
        assert all(r.config == selection[f"{NQ}/{opt}"]["config"] for r in mine)
        assert selection[f"{NQ}/{opt}"]["trials"] == 2  # two configurations x one tuning seed
    assert summary.scored == score and {r.seed for r in tune}.isdisjoint({0, 1})
    # the cells are listed in phase order, each with its record
    assert [c.spec.role for c in summary.cells] == ["tune"] * 4 + ["score"] * 4
    assert [c.run_id for c in summary.cells] == [r.run_id for r in summary.records]


def test_a_suite_without_sweeps_runs_no_tune_phase(tmp_path: Path) -> None:
    text = NQ_SUITE.replace("sweep: {lr: [0.03, 0.1]}", "hparams: {lr: 0.1}").replace(
        "sweep: {lr: [0.003, 0.01]}", "hparams: {lr: 0.01}"
    )
    plan = build_plan(parse_suite(text))
    assert not plan.tunes and plan.tune_cells() == []
    assert plan.phase_sizes() == {"tune": 0, "calibrate": 0, "score": 4}
    out = tmp_path / "out"
    summary = suite.run_suite(write(tmp_path, text), out=out)
    assert [r.role for r in summary.records] == ["score"] * 4
    assert sorted((r.optimizer, r.seed, r.hparams["lr"]) for r in summary.records) == [
        ("adamw", 0, 0.1), ("adamw", 1, 0.1), ("lion", 0, 0.01), ("lion", 1, 0.01),
    ]  # fmt: skip
    assert all(r.config == {} for r in summary.records)
    assert not (out / "selection.json").exists() and summary.selection == {}


# -- selection by time to target ----------------------------------------------------------------

RACE = """
seeds: [0]
tasks:
  - name: rosenbrock
    options: {preset: tiny}          # target: distance <= 1.0
    budget: {steps: 100, eval_interval: 10}
optimizers:
  - name: adamw
    sweep: {lr: [0.3, 0.5]}
  - name: lion
    sweep: {lr: [0.03, 0.3]}
executor: {threads: 1}  # one thread per run: fast on a loaded machine
"""


def test_selection_takes_the_configuration_fastest_to_the_target_not_the_best_final_one(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    summary = suite.run_suite(write(tmp_path, RACE), out=out)
    tune = by_role(summary.records, "tune")
    assert len(tune) == 4 and {r.seed for r in tune} == {1}
    selection = json.loads((out / "selection.json").read_text())
    for opt in ("adamw", "lion"):
        mine = {r.config["lr"]: r for r in tune if r.optimizer == opt}
        assert all(r.target.value == 1.0 and r.target.metric == "distance" for r in mine.values())
        reach = {lr: crossing(r, 1.0) for lr, r in mine.items()}
        for lr, r in mine.items():  # the record's crossing is the interpolated one
            assert r.steps_to_target == (None if reach[lr] is None else pytest.approx(reach[lr]))
        fastest = min((t, lr) for lr, t in reach.items() if t is not None)[1]
        assert selection[f"{ROSEN}/{opt}"]["config"] == {"lr": fastest}
        assert [r.config for r in summary.scored if r.optimizer == opt] == [{"lr": fastest}]
    # the case is built so that, for lion, the fastest configuration is not the best at the end
    lion = {r.config["lr"]: r for r in tune if r.optimizer == "lion"}
    best = min(lion, key=lambda lr: lion[lr].best_metrics["distance"])
    assert best == 0.03 and selection[f"{ROSEN}/lion"]["config"] == {"lr": 0.3}
    assert lion[0.03].best_metrics["distance"] < lion[0.3].best_metrics["distance"]
    assert crossing(lion[0.3], 1.0) < crossing(lion[0.03], 1.0)
    # adamw: lr 0.3 never reaches distance 1.0 in 100 steps, so lr 0.5 is the only finisher
    assert crossing(tune[0], 1.0) is None and selection[f"{ROSEN}/adamw"]["config"] == {"lr": 0.5}
    # both picks are the largest lr of their grid, and flagged so; tuning cost 2 runs of 100 steps
    for opt in ("adamw", "lion"):
        assert selection[f"{ROSEN}/{opt}"]["flags"] == ["lr at the top of its grid"]
        assert selection[f"{ROSEN}/{opt}"]["trials"] == 2
        assert (
            selection[f"{ROSEN}/{opt}"]["tokens"] == 200
            and selection[f"{ROSEN}/{opt}"]["grad_evals"] == 200
        )


def test_with_several_tuning_seeds_the_censored_median_time_decides(tmp_path: Path) -> None:
    text = NQ_SUITE.replace("[0, 1]", "[0, 1]\ntuning: {seeds: [5, 6, 7]}")
    text = text.replace("budget: {steps: 20", "budget: {steps: 30")
    summary = suite.run_suite(write(tmp_path, text), out=tmp_path / "out")
    tune = by_role(summary.records, "tune")
    assert len(tune) == 12 and sorted({r.seed for r in tune}) == [5, 6, 7]
    for opt in ("adamw", "lion"):
        times, bests = {}, {}
        for lr in {r.config["lr"] for r in tune if r.optimizer == opt}:
            mine = [r for r in tune if r.optimizer == opt and r.config["lr"] == lr]
            assert len(mine) == 3
            # a seed that never reaches the target counts as "later than any that did"
            reached = sorted(crossing(r, r.target.value) or math.inf for r in mine)
            times[lr], bests[lr] = (
                reached[1],
                statistics.median(r.best_metrics["gap"] for r in mine),
            )
        pick = min(times, key=lambda lr: (times[lr], bests[lr]))
        chosen = summary.selection[f"{NQ}/{opt}"]
        assert chosen["config"] == {"lr": pick} and chosen["trials"] == 6
        assert [r.config for r in summary.scored if r.optimizer == opt] == [{"lr": pick}] * 2


def test_equal_times_to_target_go_to_the_best_metric(tmp_path: Path) -> None:
    # every run starts at distance 2.2 <= 3.0: all reach the target at step 0, a tie
    text = RACE.replace("budget: {steps: 100", "target: 3.0\n    budget: {steps: 100")
    out = tmp_path / "out"
    summary = suite.run_suite(write(tmp_path, text), out=out)
    tune = by_role(summary.records, "tune")
    assert all(r.target.value == 3.0 and r.steps_to_target == 0 for r in tune)
    for opt in ("adamw", "lion"):
        mine = [r for r in tune if r.optimizer == opt]
        best = min(mine, key=lambda r: r.best_metrics["distance"]).config
        assert summary.selection[f"{ROSEN}/{opt}"]["config"] == best
    # the best metric picks the other lion configuration than the race to distance 1.0 did
    lion = summary.selection[f"{ROSEN}/lion"]
    assert lion["config"] == {"lr": 0.03} and lion["flags"] == ["lr at the bottom of its grid"]


# -- calibration --------------------------------------------------------------------------------

CALIBRATED = """
seeds: [0, 1, 2]
tasks:
  - name: noisy-quadratic
    options: {preset: tiny}
    budget: {steps: 30, eval_interval: 10}
    target: calibrate
    margin: 0.5
optimizers:
  - name: adamw
    sweep: {lr: [0.03, 0.1]}
  - name: lion
    sweep: {lr: [0.003, 0.01]}
executor: {threads: 1}  # one thread per run: fast on a loaded machine
"""


def test_calibrated_target_is_the_median_of_the_baseline_on_calibration_seeds_relaxed(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    summary = suite.run_suite(write(tmp_path, CALIBRATED), out=out)
    tune, score = by_role(summary.records, "tune"), by_role(summary.records, "score")
    cal = by_role(summary.records, "calibrate")
    # tuning on seed 3; the baseline's configuration with the best metric in tuning is
    # calibrated on the next three seeds
    assert {r.seed for r in tune} == {3} and len(tune) == 4
    adamw_tune = [r for r in tune if r.optimizer == "adamw"]
    chosen = min(adamw_tune, key=lambda r: r.best_metrics["gap"]).config
    assert sorted(r.seed for r in cal) == [4, 5, 6]
    assert all(r.optimizer == "adamw" and r.config == chosen for r in cal)
    # median of the three best gaps (the middle one, not the mean), relaxed by 50%
    best = sorted(r.best_metrics["gap"] for r in cal)
    value = best[1] * 1.5
    stored = json.loads((out / "calibration.json").read_text())[NQ]
    assert stored["value"] == pytest.approx(value) and summary.calibration[NQ] == stored
    assert stored["metric"] == "gap" and stored["direction"] == "min" and stored["margin"] == 0.5
    assert sorted(stored["baseline_values"]) == best and stored["seeds"] == [4, 5, 6]
    assert stored["config"] == chosen and suite.calibration_of(out) == {NQ: stored}
    # calibration runs are never scored
    assert summary.scored == score and all(r.role == "score" for r in summary.scored)
    assert {r.seed for r in score} == {0, 1, 2} and len(score) == 6
    # scored runs train against the calibrated target; tuning runs are rescored against it
    for r in score:
        assert r.settings["target"] == pytest.approx(value)
    for r in tune + score:
        assert r.target.metric == "gap" and r.target.value == pytest.approx(value)
        reached = crossing(r, r.target.value)
        assert r.steps_to_target == (None if reached is None else pytest.approx(reached))
    on_disk = {r.run_id: r for r in tune}
    for path in out.glob("noisy-quadratic__*.json"):
        text = json.loads(path.read_text())
        if text["run_id"] in on_disk:  # the rescored tuning records were written back
            assert text["target"]["value"] == pytest.approx(value)
    # selection goes by time to the calibrated target (best metric where none reaches it)
    selection = json.loads((out / "selection.json").read_text())
    for opt in ("adamw", "lion"):
        mine = [r for r in tune if r.optimizer == opt]
        reach = [(crossing(r, value), r.best_metrics["gap"], r.config["lr"]) for r in mine]
        finished = [x for x in reach if x[0] is not None]
        pick = min(finished)[2] if finished else min(reach, key=lambda x: x[1])[2]
        assert selection[f"{NQ}/{opt}"]["config"] == {"lr": pick}


def test_calibration_of_a_seed_independent_task_runs_one_seed_per_phase(tmp_path: Path) -> None:
    text = """
seeds: [0, 1, 2]
tasks:
  - name: rosenbrock
    options: {preset: tiny}
    budget: {steps: 40, eval_interval: 10}
    target: calibrate
    margin: 0.1
optimizers:
  - name: adamw
    sweep: {lr: [0.1, 0.3]}
  - name: lion
    sweep: {lr: [0.03, 0.1]}
executor: {threads: 1}  # one thread per run: fast on a loaded machine
"""
    plan = build_plan(parse_suite(text))
    assert plan.seeds == {"score": [0, 1, 2], "tune": [3], "calibrate": [4, 5, 6]}
    # one seed per phase: 4 tuning cells, 1 calibration cell, 2 scored cells (not 4, 3, 6)
    assert plan.phase_sizes() == {"tune": 4, "calibrate": 1, "score": 2}
    assert {c.spec.seed for c in plan.tune_cells()} == {3}
    assert [c.spec.seed for c in plan.calibrate_cells({})] == [4]
    assert [c.spec.seed for c in plan.score_cells({}, {ROSEN: 1.0})] == [0, 0]
    summary = suite.run_suite(write(tmp_path, text), out=tmp_path / "out")
    assert [(r.role, r.seed) for r in summary.records] == (
        [("tune", 3)] * 4 + [("calibrate", 4)] + [("score", 0)] * 2
    )
    assert all(r.seed_independent for r in summary.records)
    [cal] = by_role(summary.records, "calibrate")
    assert summary.calibration[ROSEN]["value"] == pytest.approx(cal.best_metrics["distance"] * 1.1)
    assert summary.calibration[ROSEN]["baseline_values"] == [cal.best_metrics["distance"]]


def test_calibration_median_counts_diverged_runs_as_worst_and_refuses_a_majority() -> None:
    from bench_cli.protocol import calibrate
    from bench_cli.results.record import Env

    plan = build_plan(
        parse_suite(
            "seeds: [0, 1, 2]\ntasks: [{name: noisy-quadratic, options: {preset: tiny}, "
            "target: calibrate, margin: 0.2}]\noptimizers: [{name: adamw}]"
        )
    )
    env = Env(device="cpu", device_name="cpu", torch="-", bench="-", python="-", platform="-")

    def rec(seed: int, gap: float | None, status: str = "done") -> RunRecord:
        return RunRecord(
            run_id=f"r{seed}", task="noisy-quadratic", task_id=NQ, task_options={},
            optimizer="adamw", hparams={}, settings={}, seed=seed, unit="steps", status=status,
            best_metrics={} if gap is None else {"gap": gap}, env=env, started_at="",
            finished_at="", role="calibrate",
        )  # fmt: skip

    # a diverged run counts as the worst value even if its best value was small
    got = calibrate(plan, [rec(4, 3.0), rec(5, 0.01, "diverged"), rec(6, 1.0)])[NQ]
    assert got["value"] == pytest.approx(3.0 * 1.2)  # median of (3.0, inf, 1.0) is 3.0
    assert got["baseline_values"] == [3.0, math.inf, 1.0] and got["seeds"] == [4, 5, 6]
    got = calibrate(plan, [rec(4, 2.0), rec(5, 4.0), rec(6, 1.0)])[NQ]
    assert got["value"] == pytest.approx(statistics.median([2.0, 4.0, 1.0]) * 1.2)
    with pytest.raises(
        BenchError, match=rf"^cannot calibrate a target for {re.escape(NQ)}: .*diverged"
    ):
        calibrate(plan, [rec(4, 2.0), rec(5, None, "error"), rec(6, 1.0, "diverged")])


def test_a_task_whose_calibration_diverges_stops_alone_and_the_others_are_scored(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        "seeds: [0]\ntuning: {budget: unequal}\ntasks:\n"
        "  - {name: rosenbrock, options: {preset: tiny}, budget: {steps: 5}, target: calibrate}\n"
        "  - {name: noisy-quadratic, options: {preset: tiny}, budget: {steps: 5}}\n"
        "optimizers:\n  - {name: adamw, hparams: {lr: 1.0e+6}}\n"
        "  - {name: lion, sweep: {lr: [1.0e+6, 1.0e-3]}}\n",
    )
    out = tmp_path / "out"
    with pytest.raises(BenchError) as err:
        suite.run_suite(path, out=out)
    said = str(err.value)
    assert said.startswith(f"cannot calibrate a target for {ROSEN}: ") and "diverged" in said
    assert "change adamw's hparams" in said and said.endswith("(the other tasks' cells ran)")
    from bench_cli.results.store import load_records

    records = load_records(out)
    scored = {(r.task_key, r.optimizer) for r in records if r.role == "score"}
    assert scored == {(NQ, "adamw"), (NQ, "lion")}  # rosenbrock's scoring waits for a target
    assert {r.status for r in records if r.role == "calibrate"} == {"diverged"}
    selection = json.loads((out / "selection.json").read_text())
    assert sorted(selection) == [f"{NQ}/lion"]  # nothing chosen against a target never set


# -- equal budgets ------------------------------------------------------------------------------


def test_unequal_sweeps_are_refused_unless_the_suite_says_budget_unequal(tmp_path: Path) -> None:
    text = RACE.replace("sweep: {lr: [0.03, 0.3]}", "hparams: {lr: 0.3}")
    with pytest.raises(ConfigError) as info:
        build_plan(parse_suite(text))
    assert str(info.value) == (
        "optimizers have different numbers of configurations (adamw 2, lion 1): a larger sweep "
        "is an advantage; give each the same number, or set tuning: {budget: unequal} and the "
        "tables will mark it"
    )
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        suite.validate_suite(path)
    assert str(info.value).startswith(f"{path}: optimizers have different numbers")
    allowed = text + "tuning: {budget: unequal}\n"
    plan = build_plan(parse_suite(allowed))
    assert [(c.spec.optimizer, c.label) for c in plan.tune_cells()] == [
        ("adamw", "lr=0.3"), ("adamw", "lr=0.5"),
    ]  # fmt: skip
    assert plan.phase_sizes() == {"tune": 2, "calibrate": 0, "score": 2}
    summary = suite.run_suite(write(tmp_path, allowed, "u.yaml"), out=tmp_path / "out")
    assert list(summary.selection) == [f"{ROSEN}/adamw"]  # lion had nothing to choose
    [lion] = [r for r in summary.scored if r.optimizer == "lion"]
    assert lion.hparams["lr"] == 0.3 and lion.config == {}
