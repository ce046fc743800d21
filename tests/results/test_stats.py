"""Censoring, intervals, sweeps, speedups and profiles against hand-computed cases."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from bench_cli.results import inference, leaderboard, stats
from bench_cli.results.record import Target
from tests.results import TARGET, make_record, suite


def outcomes(*records):
    return [stats.outcome(r, TARGET) for r in records]


# ---- censored medians and order-statistic intervals ---------------------------------------------

INF = math.inf


@pytest.mark.parametrize(
    ("lows", "highs", "median", "low"),
    [
        ([1.0, 2.0, 5.0], [1.0, 2.0, INF], 2.0, 2.0),  # 2 of 3 reached above the censored one
        ([1.0, 2.0, 3.0, 5.0], [1.0, 2.0, 3.0, INF], 2.5, 2.5),  # 3 of 4
        ([1.0, 5.0, 6.0], [1.0, INF, INF], math.nan, 5.0),  # 1 of 3: at least 5
        ([1.0, 2.0, 5.0, 6.0], [1.0, 2.0, INF, INF], math.nan, 3.5),  # half: at least (2+5)/2
        # censored at 1.5 (it trained 1.5 and stopped), below a reached 3: the median lies in
        # [2, 3], not known
        ([1.0, 1.5, 3.0], [1.0, INF, 3.0], math.nan, 1.5),
    ],
)
def test_a_censored_median_is_a_value_only_when_the_bounds_pin_it(lows, highs, median, low):
    s = inference.summarize(lows, highs)
    assert s.median == pytest.approx(median, nan_ok=True) and s.median_low == low


@pytest.mark.parametrize(
    ("n", "k", "coverage"),
    [
        (2, 1, 0.5),  # both on one side with probability 2 / 4
        (3, 1, 0.75),  # 1 - 2/8
        (5, 1, 1 - 2 / 32),
        (6, 1, 1 - 2 / 64),
        (9, 2, 1 - 2 * 10 / 512),  # P(B <= 1) = (1 + 9) / 512
        (10, 2, 1 - 2 * 11 / 1024),  # k = 3 would give 1 - 2 * 56 / 1024 = 0.89
        (20, 6, 1 - 2 * 21700 / 2**20),  # P(B <= 5) = (1+20+190+1140+4845+15504) / 2**20
    ],
)
def test_median_rank_is_the_narrowest_with_95_percent(n, k, coverage) -> None:
    assert inference.median_rank(n) == (k, pytest.approx(coverage))
    assert inference.median_rank(1) is None


def test_interval_of_three_is_min_max_at_75_percent_and_censored_sorts_last() -> None:
    s = inference.summarize([300.0, 100.0, 200.0])
    assert (s.median, s.lo, s.hi, s.level) == (200.0, 100.0, 300.0, 0.75)
    # one run stopped at 50 without reaching: the true values are 100, 200 and something > 50,
    # so the median is somewhere in [100, 200] (not known, at least 100), and the interval's
    # upper end is the largest, censored: at least 200
    s = inference.summarize([100.0, 200.0, 50.0], [100.0, 200.0, INF])
    assert math.isnan(s.median) and s.median_low == 100.0
    assert (s.lo, s.hi, s.hi_low) == (50.0, INF, 200.0)


def test_one_seed_has_no_interval() -> None:
    s = inference.summarize([7.0])
    assert s.median == 7.0 and math.isnan(s.level) and s.lo == s.hi == 7.0


def test_all_diverged_has_no_median() -> None:
    s = inference.summarize([INF, INF], [INF, INF])
    assert math.isnan(s.median) and s.median_low == INF and s.reached == 0


# ---- the sign-flip test by hand ------------------------------------------------------------------


def test_sign_flip_p_values_by_hand() -> None:
    # all 6 positive: only the identity flip reaches the observed sum: 1/64
    assert inference.sign_flip_p([1, 2, 3, 4, 5, 6]) == 1 / 64
    # [3, -1, 2]: sums >= 4 among the 8 flips: (3,1,2)=6, (3,-1,2)=4 -> 2/8
    assert inference.sign_flip_p([3, -1, 2]) == 2 / 8
    # an infinite entry dominates: -inf with 5 positives is beaten by every flip of its sign
    assert inference.sign_flip_p([-INF, 1, 2, 3, 4, 5]) == pytest.approx(33 / 64)
    assert inference.sign_flip_p([INF] * 6) == 1 / 64


def test_too_few_pairs_for_the_level() -> None:
    assert inference.min_pairs(0.05) == 6  # 2 / 2**5 = 0.0625 > 0.05 >= 2 / 2**6
    assert inference.min_pairs(0.10) == 5 and inference.min_pairs(0.01) == 8
    v = inference.paired_verdict([1.0] * 5, [1.0] * 5)
    assert v.verdict == "too few seeds (6 needed)"
    assert inference.paired_verdict([1.0] * 5, [1.0] * 5, alpha=0.1).verdict == "better"


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


def test_a_stopped_run_is_censored_at_what_it_trained_and_a_diverged_one_never_reaches() -> None:
    # cut after 40 of its 100 planned steps (a time limit): at least 4000 tokens, not the 10k plan
    (cut,) = outcomes(make_record(ttt=None, steps_done=40))
    assert cut.tokens is None and (cut.tokens_low, cut.tokens_high) == (4000.0, INF)
    assert (cut.seconds_low, cut.seconds_high) == (4.0, INF)
    (o,) = outcomes(make_record(ttt=None, status="diverged", steps_done=50))
    assert o.best == INF and o.tokens is None and o.tokens_low == o.tokens_high == INF
    (hit,) = outcomes(make_record(ttt=3000.0))
    assert hit.tokens_low == hit.tokens_high == pytest.approx(3000.0)


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
    ("base", "opt", "opt_steps", "bounds"),
    [
        (4000.0, 2000.0, 100, (math.log(2.0), math.log(2.0))),  # both reached: a point
        (None, 2000.0, 100, (math.log(5.0), INF)),  # baseline trained 10k, not reached: >= 5x
        (4000.0, None, 100, (-INF, math.log(0.4))),  # optimizer trained 10k: <= 0.4x
        (4000.0, None, 40, (-INF, 0.0)),  # optimizer stopped at 4k: <= 1x, never its 10k plan
        (None, None, 100, (-INF, INF)),  # neither reached: either side of 1
    ],
)
def test_per_seed_log_speedup_bounds(base, opt, opt_steps, bounds) -> None:
    b = outcomes(make_record(ttt=base))
    o = outcomes(make_record("lm", "x", ttt=opt, steps_done=opt_steps))
    ((lo, hi),) = stats.paired_log_bounds(b, o)
    assert (lo, hi) == (pytest.approx(bounds[0]), pytest.approx(bounds[1]))


def test_a_diverged_run_never_reaches_the_target() -> None:
    diverged = make_record("lm", "lion", ttt=None, status="diverged", steps_done=30)
    assert stats.paired_log_bounds(outcomes(make_record(ttt=4000.0)), outcomes(diverged)) == [
        (-INF, -INF)
    ]


def test_only_shared_seeds_are_paired() -> None:
    base = outcomes(make_record(seed=0, ttt=4000.0), make_record(seed=1, ttt=4000.0))
    opt = outcomes(make_record(seed=1, ttt=1000.0), make_record(seed=2, ttt=1000.0))
    s = stats.paired_speedup(base, opt)
    assert (s.value, s.pairs, s.verdict) == (pytest.approx(4.0), 1, "too few seeds (6 needed)")
    assert stats.paired_speedup(base, []).verdict == "n/a"


def six(times):
    return outcomes(*[make_record("lm", "x", seed=s, ttt=t) for s, t in enumerate(times)])


BASE6 = [4000.0] * 6


@pytest.mark.parametrize(
    ("opt", "verdict"),
    [
        ([2000.0, 1000.0, 3000.0, 2000.0, 1000.0, 3000.0], "better"),  # all 6 faster: p = 1/64
        ([8000.0, 5000.0, 9000.0, 8000.0, 5000.0, 9000.0], "worse"),
        ([2000.0, 8000.0, 2000.0, 8000.0, 2000.0, 8000.0], "inconclusive"),  # +-log 2: p = 1/2
        # five clearly faster, one that never reached it (trained 10k): the worst case for
        # "better" puts that pair at -inf, which every flip of its sign beats: p = 33/64
        ([2000.0, 1000.0, 3000.0, 2000.0, 1000.0, None], "inconclusive"),
        # five clearly slower and one censored: still "worse" (the censored pair is <= 0.4x)
        ([8000.0, 5000.0, 9000.0, 8000.0, 5000.0, None], "worse"),
    ],
)
def test_verdicts_by_hand(opt, verdict) -> None:
    assert stats.paired_speedup(six(BASE6), six(opt)).verdict == verdict


def test_both_censored_pairs_cannot_count_for_better() -> None:
    # every pair: the baseline trained 10k without reaching; the optimizer neither
    s = stats.paired_speedup(six([None] * 6), six([None] * 6))
    assert s.verdict == "inconclusive" and (s.lo, s.hi) == (0.0, INF) and math.isnan(s.value)
    # the optimizer reached at 2k where the baseline did not: a bound, and a real "better"
    s = stats.paired_speedup(six([None] * 6), six([2000.0] * 6))
    assert (s.verdict, s.lo, s.hi) == ("better", pytest.approx(5.0), INF)


def test_seed_independent_runs_count_once_and_get_no_verdict() -> None:
    def det(opt: str, seed: int, t: float):
        return make_record("rosenbrock", opt, seed, t).model_copy(update={"seed_independent": True})

    base = outcomes(*[det("adamw", s, 4000.0) for s in range(8)])
    mars = outcomes(*[det("mars", s, 2000.0) for s in range(8)])
    s = stats.paired_speedup(base, mars)
    assert (s.value, s.pairs, s.verdict) == (pytest.approx(2.0), 1, "seed-independent")
    lb = leaderboard.build([o.record for o in base + mars])
    row = lb.tasks.set_index("optimizer").loc["mars"]
    assert (row.runs, row.reached, row.verdict) == (1, 1, "seed-independent")
    assert math.isnan(row.tokens_to_target_level)  # one observation: no interval


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
    # three seeds: [min, max] of 2000, 2050, 2100, which covers the median 75% of the time
    got = (fast.tokens_to_target, fast.tokens_to_target_lo, fast.tokens_to_target_hi)
    assert got == (pytest.approx(2050.0), pytest.approx(2000.0), pytest.approx(2100.0))
    assert fast.tokens_to_target_level == 0.75
    assert fast.seconds_to_target == pytest.approx(2.05)
    assert (fast.speedup, fast.pairs) == (pytest.approx(2.0), 3)
    assert fast.verdict == "too few seeds (6 needed)"
    assert (adamw.speedup, adamw.verdict) == (pytest.approx(1.0), "baseline")
    assert (slow.reached, slow.runs) == (0, 3) and math.isnan(slow.tokens_to_target)
    assert slow.tokens_to_target_low == 10_000  # what it trained: "at least 10k"
    # censored at the 10k it trained: at most 4000/10k, 4100/10k, 4200/10k
    assert math.isnan(slow.speedup) and slow.speedup_lo == 0.0
    assert slow.speedup_hi == pytest.approx((0.40 * 0.41 * 0.42) ** (1 / 3))
    assert (fast.trials, fast.compute_tokens, fast.state_mb) == (3, 30_000.0, 2.0)


def test_six_seeds_give_verdicts() -> None:
    lb = leaderboard.build(suite(seeds=tuple(range(6))))
    rows = {(r.task, r.optimizer): r for r in lb.tasks.itertuples()}
    assert rows[("lm", "fast")].verdict == "better"
    assert rows[("lm", "fast")].p_better == 1 / 64
    assert rows[("lm", "slow")].verdict == "worse" and rows[("valley", "slow")].verdict == "worse"
    # six seeds: [min, max] again, now at 1 - 2/64 = 96.9%
    assert rows[("lm", "fast")].tokens_to_target_level == pytest.approx(1 - 2 / 64)


def test_ranking_by_hand() -> None:
    ranking = leaderboard.build(suite()).ranking.set_index("optimizer")
    assert list(ranking.index) == ["fast", "adamw", "slow"]
    assert list(ranking["rank"]) == [1, 2, 3]
    assert list(ranking["reached"]) == [2, 2, 1]
    # adamw is 2x the fastest on both tasks; slow 3x on lm and never on valley
    assert ranking.loc["adamw", "profile_score"] == pytest.approx(2 / 3)
    assert ranking.loc["slow", "profile_score"] == pytest.approx((1 / 3 + 0) / 2)
    # the geometric mean over the tasks where the speedup is known: lm only (6000+150s vs 4000+100s)
    assert ranking.loc["slow", "speedup"] == pytest.approx(2 / 3)
    assert ranking.loc["slow", "speedup_tasks"] == 1


def test_optimizers_that_reach_nothing_share_a_rank() -> None:
    """No target reached by anyone: equal scores, one shared place (not places by name)."""
    never = [make_record("lm", o, s, None) for o in ("lion", "adamw", "mars") for s in (0, 1)]
    reached = [make_record("lm", "ademamix", s, 4000.0) for s in (0, 1)]
    ranking = leaderboard.build(never).ranking
    assert list(ranking["rank"]) == [1, 1, 1] and list(ranking["optimizer"]) == sorted(
        ["lion", "adamw", "mars"]
    )
    ranking = leaderboard.build(never + reached).ranking.set_index("optimizer")
    assert ranking.loc["ademamix", "rank"] == 1
    assert {ranking.loc[o, "rank"] for o in ("lion", "adamw", "mars")} == {2}


def test_missing_baseline_leaves_speedups_undefined() -> None:
    lb = leaderboard.build(suite(), baseline="nope")
    assert lb.tasks["speedup"].isna().all() and set(lb.tasks["verdict"]) == {"n/a"}


def test_only_scored_runs_make_the_table() -> None:
    tune = [r.model_copy(update={"role": "tune", "run_id": r.run_id + "t"}) for r in suite()]
    cal = [r.model_copy(update={"role": "calibrate", "run_id": r.run_id + "c"}) for r in suite()]
    fast_scored = [r for r in suite() if r.optimizer == "fast"] + [
        make_record("lm", "adamw", s, 1000.0) for s in range(3)
    ]
    lb = leaderboard.build(tune + cal + fast_scored)
    assert set(lb.tasks["task"]) == {"lm", "valley"}
    lm = lb.tasks[lb.tasks["task"] == "lm"].set_index("optimizer")
    # adamw's scored runs (1000 tokens) decide, not its tuning runs (4000+)
    assert lm.loc["adamw", "tokens_to_target"] == 1000.0 and lm.loc["fast", "runs"] == 3
    assert lm.loc["fast", "trials"] == 3  # the tuning runs: 1 configuration x 3 seeds


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


def test_two_runs_of_one_seed_that_differ_in_data_are_refused_not_one_dropped() -> None:
    from bench_cli.errors import BenchError

    one = make_record("lm", "adamw", 0, 2000.0)
    other = make_record("lm", "adamw", 0, 5000.0).model_copy(
        update={"run_id": "lm__other", "task_options": {"data": "/elsewhere/train.bin"}}
    )
    assert len(leaderboard.build([one]).tasks) == 1
    with pytest.raises(BenchError, match="lm__other") as err:
        leaderboard.build([one, other])
    assert "separate folders" in str(err.value)
    assert f"task option data ({one.task_options.get('data')!r} and '/elsewhere/train.bin')" in (
        str(err.value)
    )
    # the same run on another device: the setting is named, not the data
    moved = one.model_copy(update={"run_id": "lm__auto", "settings": {**one.settings,
                                                                     "device": "auto"}})  # fmt: skip
    with pytest.raises(BenchError, match=r"differ in setting device \('cpu' and 'auto'\);"):
        leaderboard.build([one, moved])


def test_random_flips_above_16_pairs_give_a_valid_p_value() -> None:
    # 17 pairs all positive: exactly 2**-17, estimated from 20,000 flips as (1 + hits) / 20,001
    p = inference.sign_flip_p([1.0] * 17)
    assert 1 / 20_001 <= p <= 5 / 20_001
    # alternating signs of equal size: about half the flips reach the observed sum
    assert 0.4 < inference.sign_flip_p([1.0, -1.0] * 9) < 0.7
    assert inference.sign_flip_p([1.0] * 17) == p  # a fixed seed: the same every time
