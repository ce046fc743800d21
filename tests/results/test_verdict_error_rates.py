"""Error rates measured by simulation through the package's own functions.

- A/A: two optimizers identical in distribution (log-normal tokens-to-target, runs cut at a
  random number of trained tokens, so some are censored): a wrong verdict ("better" or "worse")
  in at most about 5% of suites at 3, 5 and 10 seeds.
- A/B: an optimizer 1.5x slower in median is found "worse" with 8 seeds in at least 90% of suites.
- Coverage: the order-statistic intervals cover the true median as often as they say.
- Calibration: with the target calibrated on separate seeds, the baseline and an identical copy
  reach it equally often within binomial noise (and calibrating on the scored seeds, the old way,
  is caught by the same check).
- Selection on the scored seeds (an older folder, or ``bench run`` calls with other values into
  one folder): an optimizer whose best of 8 identical configurations is picked on the seeds it is
  judged on is called "better" in at most about 2.5% of suites, and the picked configuration's
  interval covers its median at least as often as it says.
- The ``bench check`` gate: with new runs drawn as the baseline's, a pair is called slower in at
  most about 5% of comparisons at 3, 5 and 8 seeds (censored or not, any tolerance); a pair 2x
  slower is caught with 5 seeds in at least 80% of them.

Every simulation uses a fixed numpy seed, so each run of the tests sees the same suites.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench_cli.results import inference, leaderboard, selection, stats
from bench_cli.results.record import RunRecord, Target
from tests.results import ENV, TARGET

SUITES = 2000
ALPHA = 0.05


def binomial_slack(p: float, n: int, z: float = 3.0) -> float:
    return z * math.sqrt(p * (1 - p) / n)


def record(opt: str, seed: int, ttt: float, trained: float) -> RunRecord:
    """A scored run that needs ``ttt`` tokens and trained ``trained``: censored when ttt > trained.

    ``model_construct`` skips validation: tens of thousands of these are built per test."""
    reached = ttt <= trained
    return RunRecord.model_construct(
        run_id=f"{opt}{seed}", task="t", task_id="", task_options={}, optimizer=opt,
        hparams={}, settings={}, seed=seed, role="score", config={}, seed_independent=False,
        unit="tokens", status="done", target=TARGET,
        tokens_to_target=ttt if reached else None,
        seconds_to_target=ttt / 1000 if reached else None,
        best_metrics={"val_loss": 0.9 if reached else 1.1}, final_metrics={"val_loss": 1.0},
        tokens_done=int(trained), train_seconds=trained / 1000, curve=[], env=ENV,
        grad_evals=0, steps_done=1,
    )  # fmt: skip


def simulate(rng, n: int, median_ratio: float = 1.0, sigma: float = 0.3, budget=(5000, 8000)):
    """One suite's outcomes: baseline and optimizer runs on ``n`` seeds.

    Tokens-to-target are log-normal around 4000 (the optimizer's median ``median_ratio`` times
    that, ``sigma`` the spread of its log over seeds); each run trains a random number of tokens
    within ``budget`` (a time limit), so some runs are censored."""
    out = {}
    for opt, median in (("adamw", 4000.0), ("x", 4000.0 * median_ratio)):
        ttt = median * np.exp(sigma * rng.standard_normal(n))
        trained = rng.uniform(*budget, n)
        out[opt] = [
            stats.outcome(record(opt, s, t, c), TARGET)
            for s, (t, c) in enumerate(zip(ttt, trained))
        ]
    return out["adamw"], out["x"]


def verdict_counts(n: int, suites: int = SUITES, seed: int = 0, **kw):
    rng = np.random.default_rng(seed)
    counts: dict[str, int] = {}
    censored = 0
    for _ in range(suites):
        base, opt = simulate(rng, n, **kw)
        censored += sum(o.tokens is None for o in base + opt)
        v = stats.paired_speedup(base, opt, ALPHA).verdict
        counts[v] = counts.get(v, 0) + 1
    return counts, censored / (2 * n * suites)


@pytest.mark.parametrize("n", [3, 5, 10])
def test_a_a_wrong_verdicts_are_at_most_the_level(n: int) -> None:
    counts, censored = verdict_counts(n)
    assert censored > 0.02, "the simulation must exercise censoring"
    wrong = (counts.get("better", 0) + counts.get("worse", 0)) / SUITES
    assert wrong <= ALPHA + binomial_slack(ALPHA, SUITES), counts
    if n < inference.min_pairs(ALPHA):
        assert counts == {"too few seeds (6 needed)": SUITES}
    else:  # the test is not vacuous: it does reject now and then, on both sides
        assert counts.get("better", 0) > 0 and counts.get("worse", 0) > 0, counts


def test_a_b_a_clearly_slower_optimizer_is_found_worse_with_8_seeds() -> None:
    # 1.5x the baseline's median with a 20% spread over seeds; every run trains 6.5k-9k tokens,
    # so the slower one misses the target in about an eighth of its runs
    counts, censored = verdict_counts(8, median_ratio=1.5, sigma=0.2, budget=(6500, 9000))
    assert censored > 0.02
    assert counts.get("worse", 0) / SUITES >= 0.90, counts
    assert counts.get("better", 0) == 0


def test_a_b_through_the_leaderboard() -> None:
    """The leaderboard gives the same verdicts as the test it is built on."""
    rng = np.random.default_rng(1)
    for _ in range(20):
        base, opt = simulate(rng, 8, median_ratio=1.5, sigma=0.2)
        lb = leaderboard.build([o.record for o in base + opt])
        row = lb.tasks.set_index("optimizer").loc["x"]
        assert row.verdict == stats.paired_speedup(base, opt).verdict


@pytest.mark.parametrize("n", [3, 5, 10, 20])
def test_interval_coverage_matches_the_stated_level(n: int) -> None:
    rng = np.random.default_rng(n)
    sims = 4000
    true_median = 4000.0
    x = true_median * np.exp(0.5 * rng.standard_normal((sims, n)))
    covered = 0
    level = math.nan
    for row in x:
        s = inference.summarize(row)
        level = s.level
        covered += s.lo <= true_median <= s.hi
    assert level == inference.median_rank(n)[1]
    assert abs(covered / sims - level) <= binomial_slack(level, sims, z=3.5)


def test_censored_interval_coverage_is_at_least_the_stated_level() -> None:
    rng = np.random.default_rng(7)
    sims, n, true_median = 4000, 10, 4000.0
    covered = 0
    for _ in range(sims):
        x = true_median * np.exp(0.5 * rng.standard_normal(n))
        stop = rng.uniform(3000.0, 9000.0, n)  # many runs are cut before their target
        lows = np.minimum(x, stop)
        highs = np.where(x <= stop, x, math.inf)
        s = inference.summarize(lows, highs)
        covered += s.lo <= true_median <= s.hi
    assert covered / sims >= inference.median_rank(n)[1] - binomial_slack(0.98, sims, z=3.5)


# ---- calibration -------------------------------------------------------------------------------


def reach_rates(rng, suites: int, separate: bool, seeds: int = 5, cal_seeds: int = 3):
    """How often the baseline and an identical copy reach a target calibrated from the baseline:
    on separate calibration seeds, or (the old way) on the baseline's own scored seeds."""
    target = Target(metric="val_loss", value=0.0)
    reached = {"adamw": 0, "copy": 0}
    for _ in range(suites):
        best = {opt: 3.0 + 0.05 * rng.standard_normal(seeds) for opt in reached}
        cal = 3.0 + 0.05 * rng.standard_normal(cal_seeds) if separate else best["adamw"]
        value = selection.calibrated_value(list(cal), "min", margin=0.0 if not separate else 0.002)
        t = target.model_copy(update={"value": value})
        for opt in reached:
            reached[opt] += sum(t.reached(float(v)) for v in best[opt])
    return reached["adamw"], reached["copy"], suites * seeds


def two_proportion_z(a: int, b: int, n: int) -> float:
    p = (a + b) / (2 * n)
    return (a - b) / n / math.sqrt(2 * p * (1 - p) / n)


def test_calibrated_target_favours_neither_the_baseline_nor_its_copy() -> None:
    base, copy, n = reach_rates(np.random.default_rng(11), SUITES, separate=True)
    assert 0.3 < base / n < 0.8  # the target is neither trivial nor out of reach
    assert abs(two_proportion_z(base, copy, n)) < 3.0, (base, copy, n)


def test_calibrating_on_the_scored_seeds_is_caught_by_the_same_check() -> None:
    base, copy, n = reach_rates(np.random.default_rng(11), SUITES, separate=False)
    assert base == SUITES * 3  # with 5 seeds and margin 0, exactly 3 reach their own median
    assert abs(two_proportion_z(base, copy, n)) >= 3.0


def _bold_rate(n: int, suites: int, seed: int, **kw) -> float:
    """How often the LaTeX export bolds a winner among two optimizers (through the leaderboard
    and the export, as `bench export --format latex` does)."""
    from bench_cli.results import export

    rng = np.random.default_rng(seed)
    bold = 0
    for _ in range(suites):
        base, opt = simulate(rng, n, **kw)
        lb = leaderboard.build([o.record for o in base + opt], alpha=ALPHA)
        bold += "\\textbf" in export.render(lb, "latex", "tasks")
    return bold / suites


@pytest.mark.parametrize("n", [3, 10])
def test_a_a_the_latex_export_bolds_a_winner_at_most_at_the_level(n: int) -> None:
    """A bold cell claims a winner: between identical optimizers it appears in at most about
    alpha of suites, and never with fewer seeds than a verdict needs."""
    if n < inference.min_pairs(ALPHA):
        assert _bold_rate(n, 60, seed=n) == 0  # [min, max] of 3 seeds: disjoint 1 time in 10
    else:
        assert _bold_rate(n, 200, seed=n) <= ALPHA + binomial_slack(ALPHA, 200)


def test_a_b_the_latex_export_bolds_a_clearly_faster_optimizer() -> None:
    """Not vacuous: an optimizer needing half the baseline's tokens is bold in most suites."""
    assert _bold_rate(10, 60, seed=3, median_ratio=0.5, sigma=0.2, budget=(9000, 9500)) >= 0.8


def _gate_rate(n: int, suites: int, seed: int, ratio: float = 1.0, tolerance: float = 0.0,
               budget=(5000, 8000), pairs: int = 10) -> float:  # fmt: skip
    """How often ``bench check`` (its ``compare``) calls a pair slower: each suite has ``pairs``
    optimizers on one task, new runs drawn with median ``ratio`` times the baseline runs'."""
    from bench_cli.results.check import compare

    rng = np.random.default_rng(seed)

    def side(r: float) -> list[RunRecord]:
        runs = []
        for i in range(pairs):
            ttt = 4000.0 * r * np.exp(0.3 * rng.standard_normal(n))
            trained = rng.uniform(*budget, n)
            runs += [record(f"o{i}", s, t, c) for s, (t, c) in enumerate(zip(ttt, trained))]
        return runs

    called = 0
    for _ in range(suites):
        problems = compare(side(ratio), side(1.0), tolerance=tolerance, baseline="o0")
        assert all("slower than the baseline" in p for p in problems), problems
        called += len(problems)
    return called / (suites * pairs)


@pytest.mark.parametrize(
    ("n", "suites", "tolerance", "budget"),
    [(3, 150, 0.0, (5000, 8000)), (5, 100, 0.0, (3000, 6000)), (8, 50, 0.05, (5000, 8000))],
)
def test_the_gate_calls_a_pair_slower_at_most_at_the_level(n, suites, tolerance, budget) -> None:
    """New runs drawn as the baseline's (some censored; at (3000, 6000) about half): a false
    alarm in at most about alpha of the pairs."""
    rate = _gate_rate(n, suites, seed=n, tolerance=tolerance, budget=budget)
    assert rate <= ALPHA + binomial_slack(ALPHA, suites * 10)


def test_the_gate_catches_a_pair_twice_as_slow_with_5_seeds() -> None:
    """Not vacuous: new runs needing twice the tokens are called slower in most comparisons."""
    assert _gate_rate(5, 30, seed=7, ratio=2.0, tolerance=0.05, budget=(10000, 16000)) >= 0.8


def _picked_suite(rng, n: int, configs: int) -> list[RunRecord]:
    """The baseline with one configuration and "x" with ``configs`` identical ones, all scored
    on the same ``n`` seeds; a configuration's best value follows its tokens-to-target, so the
    leaderboard picks the luckiest (the worst case for selection bias)."""
    runs = []
    for opt, k in (("adamw", 1), ("x", configs)):
        for c in range(k):
            ttt = 4000.0 * np.exp(0.3 * rng.standard_normal(n))
            trained = rng.uniform(5000, 8000, n)
            for seed, (t, budget) in enumerate(zip(ttt, trained)):
                r = record(opt, seed, t, budget)
                best = {"val_loss": t / 1e4}
                runs.append(r.model_copy(update={"hparams": {"lr": c}, "run_id": f"{opt}{seed}c{c}",
                                                 "best_metrics": best}))  # fmt: skip
    return runs


def test_a_configuration_picked_on_the_scored_seeds_keeps_the_level() -> None:
    rng = np.random.default_rng(11)
    suites, better, covered, stated = 600, 0, 0, []
    for _ in range(suites):
        lb = leaderboard.build(_picked_suite(rng, 10, 8), alpha=ALPHA)
        row = lb.tasks[lb.tasks["optimizer"] == "x"].iloc[0]
        assert row["configs"] == 8 and row["alpha"] == ALPHA / 8
        better += row["verdict"] == "better"
        covered += row["tokens_to_target_lo"] <= 4000.0 <= row["tokens_to_target_hi"]
        stated.append(row["tokens_to_target_level"])
    assert better / suites <= ALPHA / 2 + binomial_slack(ALPHA / 2, suites)
    level = float(np.mean(stated))
    assert covered / suites >= level - binomial_slack(1 - level, suites)
