"""Censoring, intervals, sweeps, speedups and profiles against hand-computed cases."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from bench_cli.results import leaderboard, stats
from bench_cli.results.record import Target
from tests.results import TARGET, make_record, suite


def outcomes(*records):
    return [stats.outcome(r, TARGET) for r in records]


# ---- censoring ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1.0, 2.0, None], 2.0),  # 2 of 3 reached: the middle value
        ([1.0, 2.0, 3.0, None], 2.5),  # 3 of 4
        ([1.0, None, None], math.nan),  # 1 of 3: not more than half
        ([1.0, 2.0, None, None], math.nan),  # exactly half is not enough
        ([None], math.nan),
        ([], math.nan),
    ],
)
def test_median_is_reported_only_when_more_than_half_reached(values, expected) -> None:
    got = stats.censored_median(values)
    assert (math.isnan(got) and math.isnan(expected)) or got == expected


def test_censored_summary_counts_and_an_interval_open_to_the_top() -> None:
    # resampling 3 seeds, the median is censored when >= 2 draws are: 7/27 > 2.5%, so hi = inf;
    # it is 100 when >= 2 draws are 100, also 7/27, so lo = 100
    s = stats.summarize_censored([100.0, 200.0, None])
    assert (s.median, s.lo, s.hi, s.reached, s.total) == (200.0, 100.0, math.inf, 2, 3)


def test_all_censored_has_no_median_and_an_infinite_interval() -> None:
    s = stats.summarize_censored([None, None])
    assert math.isnan(s.median) and s.lo == s.hi == math.inf and s.reached == 0


# ---- bootstrap ---------------------------------------------------------------------------------


def test_bootstrap_collapses_on_degenerate_data() -> None:
    assert stats.median_ci([5.0, 5.0, 5.0]) == (5.0, 5.0, 5.0)
    assert stats.median_ci([7.0]) == (7.0, 7.0, 7.0)
    assert stats.geomean_ci([2.0, 2.0]) == pytest.approx((2.0, 2.0, 2.0))


def test_bootstrap_of_two_values_spans_both() -> None:
    # medians of resampled pairs are 1, 50.5 or 100 with probabilities 1/4, 1/2, 1/4
    assert stats.median_ci([1.0, 100.0]) == (50.5, 1.0, 100.0)
    # geometric means of resampled pairs: 2, 4 or 8
    assert stats.geomean_ci([2.0, 8.0]) == pytest.approx((4.0, 2.0, 8.0))


def test_bootstrap_is_deterministic_and_brackets_the_median() -> None:
    values = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]
    first = stats.median_ci(values)
    assert first == stats.median_ci(values)
    median, lo, hi = first
    assert min(values) <= lo <= median <= hi <= max(values)
    assert stats.median_ci([]) == pytest.approx((math.nan,) * 3, nan_ok=True)


# ---- runs against a target ---------------------------------------------------------------------


def test_another_target_is_recomputed_from_the_curve() -> None:
    # the loss falls as 2 - tokens/ttt: 1.5 is crossed at half of ttt
    r = make_record(ttt=4000.0)
    o = stats.outcome(r, Target(metric="val_loss", value=1.5))
    assert o.tokens == pytest.approx(2000.0) and o.seconds == pytest.approx(2.0)
    assert stats.outcome(r, TARGET).tokens == r.tokens_to_target == pytest.approx(4000.0)


def test_the_most_common_target_wins_unless_overridden() -> None:
    other = Target(metric="val_loss", value=2.0)
    records = [make_record(seed=0), make_record(seed=1), make_record(seed=2, target=other)]
    assert stats.analysis_targets(records) == {"lm": TARGET}
    assert stats.analysis_targets(records, {"lm": other}) == {"lm": other}


def test_a_diverged_run_has_the_worst_best_value_and_its_planned_budget() -> None:
    (o,) = outcomes(make_record(ttt=None, status="diverged", steps_done=50))
    assert o.best == math.inf and o.tokens is None and o.budget == 10_000


# ---- sweeps ------------------------------------------------------------------------------------


def sweep(bests: dict[float, list[float | None]], **kw):
    """Runs per learning rate; None marks a diverged seed."""
    return outcomes(
        *[
            make_record(
                seed=s, hparams={"lr": lr}, best=b, status="done" if b else "diverged", **kw
            )
            for lr, values in bests.items()
            for s, b in enumerate(values)
        ]
    )


def lr_of(choice: stats.ConfigChoice) -> float:
    return choice.runs[0].record.hparams["lr"]


def test_best_config_is_the_best_median_over_seeds() -> None:
    runs = sweep({1e-3: [1.0, 1.2, 1.1], 3e-3: [0.9, 2.0, 1.0]})  # medians 1.1 and 1.0
    choice = stats.best_config(runs, "min")
    assert lr_of(choice) == 3e-3 and choice.score == 1.0
    assert (choice.configs, choice.trials) == (2, 6)
    assert (choice.compute_tokens, choice.compute_seconds) == (60_000.0, 60.0)
    assert lr_of(stats.best_config(runs, "max")) == 1e-3


def test_diverged_seeds_count_as_the_worst_value() -> None:
    # 1e-2 diverged on two of three seeds: its median is +inf despite one lucky run
    runs = sweep({1e-3: [1.1, 1.2, 1.3], 1e-2: [None, None, 0.1]})
    assert lr_of(stats.best_config(runs)) == 1e-3


def test_ties_go_to_more_seeds_then_to_the_smaller_key() -> None:
    assert lr_of(stats.best_config(sweep({1e-3: [1.0, 1.0], 3e-3: [1.0, 1.0, 1.0]}))) == 3e-3
    assert lr_of(stats.best_config(sweep({3e-3: [1.0, 1.0], 1e-3: [1.0, 1.0]}))) == 1e-3


def test_error_runs_are_trials_but_not_results() -> None:
    runs = outcomes(make_record(seed=0, ttt=3000.0), make_record(seed=1, status="error"))
    choice = stats.best_config(runs)
    assert len(choice.runs) == 1 and choice.trials == 2


# ---- paired speedup ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "opt", "ratio"),
    [
        (4000.0, 2000.0, 2.0),  # both reached
        (None, 2000.0, 5.0),  # baseline censored at its 10k budget: at least 5x
        (4000.0, None, 0.4),  # optimizer censored: at most 0.4x
        (None, None, 1.0),  # neither reached: no evidence either way
    ],
)
def test_per_seed_ratio_counts_a_censored_run_at_its_budget(base, opt, ratio) -> None:
    got = stats.paired_ratios(outcomes(make_record(ttt=base)), outcomes(make_record(ttt=opt)))
    assert got == pytest.approx([ratio])


def test_a_diverged_run_is_censored_at_its_planned_budget_not_where_it_stopped() -> None:
    diverged = make_record("lm", "lion", ttt=None, status="diverged", steps_done=30)
    assert stats.paired_ratios(
        outcomes(make_record(ttt=4000.0)), outcomes(diverged)
    ) == pytest.approx([0.4])


def test_only_shared_seeds_are_paired() -> None:
    base = outcomes(make_record(seed=0, ttt=4000.0), make_record(seed=1, ttt=4000.0))
    opt = outcomes(make_record(seed=1, ttt=1000.0), make_record(seed=2, ttt=1000.0))
    s = stats.paired_speedup(base, opt)
    assert (s.value, s.pairs, s.verdict) == (pytest.approx(4.0), 1, "tie")  # one pair: no verdict
    assert stats.paired_speedup(base, []).verdict == "n/a"


@pytest.mark.parametrize(
    ("base", "opt", "verdict"),
    [
        ([4000.0, 4000.0], [2000.0, 1000.0], "better"),  # ratios 2 and 4: interval [2, 4]
        ([4000.0, 4000.0], [8000.0, 5000.0], "worse"),  # 0.5 and 0.8
        ([4000.0, 4000.0], [2000.0, 8000.0], "tie"),  # 2 and 0.5: interval holds 1
    ],
)
def test_verdict_only_when_the_interval_excludes_one(base, opt, verdict) -> None:
    b = outcomes(*[make_record(seed=s, ttt=t) for s, t in enumerate(base)])
    o = outcomes(*[make_record(seed=s, ttt=t) for s, t in enumerate(opt)])
    assert stats.paired_speedup(b, o).verdict == verdict


def test_geometric_mean_skips_undefined_values() -> None:
    assert stats.geometric_mean([2.0, 8.0, math.nan]) == pytest.approx(4.0)
    assert math.isnan(stats.geometric_mean([math.nan]))


# ---- performance profile -----------------------------------------------------------------------


def test_profile_ratios_and_score_by_hand() -> None:
    times = {"a": {"x": 100.0, "y": 200.0}, "b": {"x": 300.0, "y": 100.0}}
    ratios = stats.profile_ratios(times)
    assert ratios == {"x": {"a": 1.0, "b": 3.0}, "y": {"a": 2.0, "b": 1.0}}
    # area over [1, 4] of rho, over 3: x = ((4-1) + (4-3)) / 2 / 3, y = ((4-2) + (4-1)) / 2 / 3
    assert stats.profile_score(ratios["x"]) == pytest.approx(4 / 6)
    assert stats.profile_score(ratios["y"]) == pytest.approx(5 / 6)
    assert list(stats.profile_curve(ratios["x"], [1.0, 2.0, 3.0])) == [0.5, 0.5, 1.0]


def test_not_reaching_or_not_running_scores_nothing_on_that_task() -> None:
    times = {"a": {"x": 100.0, "y": math.nan}, "b": {"x": 500.0}, "c": {"x": math.nan}}
    ratios = stats.profile_ratios(times)
    assert ratios["y"] == {"a": math.inf, "b": math.inf, "c": math.inf}
    assert ratios["x"] == {"a": 1.0, "b": 1.0, "c": math.inf}
    assert stats.profile_score(ratios["y"]) == 0.0
    assert stats.profile_score({"a": 5.0}) == 0.0  # beyond tau_max
    assert stats.profile_score(ratios["x"]) == pytest.approx(2 / 3)


# ---- the leaderboard ---------------------------------------------------------------------------


def test_task_table_by_hand() -> None:
    lb = leaderboard.build(suite())
    rows = {(r.task, r.optimizer): r for r in lb.tasks.itertuples()}
    fast, adamw, slow = rows[("lm", "fast")], rows[("lm", "adamw")], rows[("valley", "slow")]
    assert list(lb.tasks["optimizer"][:3]) == ["fast", "adamw", "slow"]  # by tokens-to-target
    assert (fast.tokens_to_target, fast.tokens_to_target_lo, fast.tokens_to_target_hi) == (
        pytest.approx(2050.0),
        pytest.approx(2000.0),
        pytest.approx(2100.0),
    )
    assert fast.seconds_to_target == pytest.approx(2.05)
    assert (fast.speedup, fast.verdict, fast.pairs) == (pytest.approx(2.0), "better", 3)
    assert (adamw.speedup, adamw.verdict) == (pytest.approx(1.0), "baseline")
    assert (slow.reached, slow.runs) == (0, 3) and math.isnan(slow.tokens_to_target)
    # censored at the 10k budget: 4000/10k, 4100/10k, 4200/10k
    assert slow.speedup == pytest.approx((0.40 * 0.41 * 0.42) ** (1 / 3))
    assert slow.verdict == "worse"
    assert (fast.trials, fast.compute_tokens, fast.state_mb) == (3, 30_000.0, 2.0)


def test_ranking_by_hand() -> None:
    ranking = leaderboard.build(suite()).ranking.set_index("optimizer")
    assert list(ranking.index) == ["fast", "adamw", "slow"]
    assert list(ranking["rank"]) == [1, 2, 3]
    assert list(ranking["reached"]) == [2, 2, 1]
    # adamw is 2x the fastest on both tasks; slow 3x on lm and never on valley
    assert ranking.loc["adamw", "profile_score"] == pytest.approx(2 / 3)
    assert ranking.loc["slow", "profile_score"] == pytest.approx((1 / 3 + 0) / 2)
    slow_valley = (0.40 * 0.41 * 0.42) ** (1 / 3)
    assert ranking.loc["slow", "speedup"] == pytest.approx(math.sqrt(2 / 3 * slow_valley))


def test_missing_baseline_leaves_speedups_undefined() -> None:
    lb = leaderboard.build(suite(), baseline="nope")
    assert lb.tasks["speedup"].isna().all() and set(lb.tasks["verdict"]) == {"n/a"}


def test_results_never_import_torch() -> None:
    code = (
        "import sys\n"
        "import bench_cli.results.stats, bench_cli.results.leaderboard, bench_cli.results.export\n"
        "import bench_cli.results.plots, bench_cli.results.check\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_table_names_what_the_sweep_chose() -> None:
    records = [
        make_record(seed=s, hparams={"lr": lr, "eps": 1e-8}, best=b)
        for lr, b in ((1e-3, 1.1), (3e-3, 1.0))
        for s in (0, 1)
    ]
    (row,) = leaderboard.build(records).tasks.itertuples()
    assert (row.swept, row.configs, row.trials) == ("lr=0.003", 2, 4)


def test_variants_of_one_task_are_separate_rows() -> None:
    from bench_cli.results import leaderboard
    from tests.results import make_record

    near = [make_record("rosenbrock", "adamw", s, 1000.0 + s) for s in range(2)]
    far = [
        make_record("rosenbrock", "adamw", s, 3000.0 + s).model_copy(
            update={"task_id": "rosen-far", "run_id": f"far{s}"}
        )
        for s in range(2)
    ]
    recs = near + far
    table = leaderboard.build(recs).tasks
    assert sorted(table["task"]) == ["rosen-far", "rosenbrock"]
    assert sorted(table["runs"]) == [2, 2]
