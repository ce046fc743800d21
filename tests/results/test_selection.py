"""Configuration selection from tuning runs, edge-of-grid flags, equal budgets and the calibration
rule, against hand-computed expectations."""

from __future__ import annotations

import math

import pytest

from bench_cli.results import export, leaderboard, selection
from tests.results import make_record


def tune(opt: str, seed: int, ttt: float | None, *, task: str = "lm", best=None, **config):
    """A tuning run of the grid point ``config``; ``steps_done`` 100 = 10k tokens trained."""
    r = make_record(task, opt, seed, ttt, hparams=dict(config), best=best)
    return r.model_copy(update={"role": "tune", "config": dict(config), "grad_evals": 200})


def test_the_smallest_censored_median_time_wins_over_the_best_metric() -> None:
    records = [
        # lr 1e-3: 3000, 5000 and one that never reached it (trained 10k): median 5000;
        # its best loss is the better one
        tune("adamw", 0, 3000.0, lr=1e-3, best=0.3),
        tune("adamw", 1, 5000.0, lr=1e-3, best=0.3),
        tune("adamw", 2, None, lr=1e-3, best=0.3),
        # lr 3e-3: 4000, 4500, 4600: median 4500, faster, though its best loss is worse
        tune("adamw", 0, 4000.0, lr=3e-3, best=0.9),
        tune("adamw", 1, 4500.0, lr=3e-3, best=0.9),
        tune("adamw", 2, 4600.0, lr=3e-3, best=0.9),
    ]
    s = selection.select_configs(records)[("lm", "adamw")]
    assert s.config == {"lr": 3e-3} and s.median_tokens == pytest.approx(4500.0)
    assert (s.trials, s.configs, s.tokens, s.grad_evals) == (6, 2, 60_000.0, 1200)


def test_a_median_censored_by_a_time_limit_does_not_win() -> None:
    # lr 1e-2 stopped after 2000 tokens on two of three seeds: its median is only "> 2000",
    # which cannot beat a known 4500 however small its bound
    records = [tune("adamw", s, 4500.0, lr=3e-3) for s in range(3)]
    records += [
        tune("adamw", 0, 1000.0, lr=1e-2),
        *[tune("adamw", s, None, lr=1e-2).model_copy(update={"tokens_done": 2000}) for s in (1, 2)],
    ]
    assert selection.select_configs(records)[("lm", "adamw")].config == {"lr": 3e-3}


def test_equal_times_go_to_the_better_metric() -> None:
    records = [
        tune("adamw", 0, 4000.0, lr=1e-3, best=0.6),
        tune("adamw", 0, 4000.0, lr=3e-3, best=0.4),
    ]
    assert selection.select_configs(records)[("lm", "adamw")].config == {"lr": 3e-3}


def test_without_a_reached_target_the_best_metric_wins() -> None:
    records = [
        tune("adamw", s, None, lr=lr, best=b)
        for lr, b in ((1e-3, 1.3), (3e-3, 1.1), (1e-2, 1.2))
        for s in range(2)
    ]
    s = selection.select_configs(records)[("lm", "adamw")]
    assert s.config == {"lr": 3e-3} and math.isnan(s.median_tokens) and s.best == 1.1


def test_diverged_configurations_lose() -> None:
    ok = tune("adamw", 0, None, lr=1e-3, best=1.5)
    bad = make_record("lm", "adamw", 0, None, status="diverged", steps_done=20, best=0.1)
    bad = bad.model_copy(update={"role": "tune", "config": {"lr": 1e-1}, "run_id": "bad"})
    assert selection.select_configs([ok, bad])[("lm", "adamw")].config == {"lr": 1e-3}


@pytest.mark.parametrize(
    ("winner", "flags"),
    [
        (1e-2, ["lr at the top of its grid"]),
        (1e-3, ["lr at the bottom of its grid"]),
        (3e-3, []),
    ],
)
def test_edge_of_grid_flags(winner: float, flags: list[str]) -> None:
    records = [
        tune("lion", 0, 2000.0 if lr == winner else 6000.0, lr=lr, wd=0.1, schedule="cosine")
        for lr in (1e-3, 3e-3, 1e-2)
    ]
    s = selection.select_configs(records)[("lm", "lion")]
    # wd and schedule were not swept (one value each): never flagged
    assert s.config["lr"] == winner and s.flags == flags


def test_two_value_grid_flags_both_ends() -> None:
    records = [tune("lion", 0, t, lr=lr) for lr, t in ((1e-3, 3000.0), (3e-3, 6000.0))]
    assert selection.select_configs(records)[("lm", "lion")].flags == [
        "lr at the bottom of its grid"
    ]


def test_selection_is_per_task_and_optimizer_and_ignores_scored_runs() -> None:
    records = [tune("adamw", 0, 3000.0, lr=1e-3), tune("adamw", 0, 2000.0, task="valley", lr=3e-3)]
    records.append(make_record("lm", "adamw", 0, 1000.0, hparams={"lr": 1e-1}))  # scored
    chosen = selection.select_configs(records)
    assert set(chosen) == {("lm", "adamw"), ("valley", "adamw")}
    assert chosen[("lm", "adamw")].config == {"lr": 1e-3} and chosen[("lm", "adamw")].trials == 1


def test_unequal_budgets_are_counted_and_marked() -> None:
    records = [tune("adamw", 0, 3000.0, lr=lr) for lr in (1e-3, 3e-3, 1e-2)]
    records += [
        tune("ademamix", 0, 3000.0, lr=lr, alpha=a) for lr in (1e-3, 3e-3, 1e-2) for a in (5, 8)
    ]
    records += [tune("lion", 0, 3000.0, lr=lr) for lr in (1e-4, 3e-4, 1e-3)]
    scored = [
        make_record("lm", opt, s, 3000.0) for opt in ("adamw", "ademamix", "lion") for s in range(2)
    ]
    counts = selection.equal_budgets(records + scored)
    assert counts == {"lm": {"adamw": 3, "ademamix": 6, "lion": 3}}
    assert selection.unequal(counts["lm"]) and not selection.unequal({"a": 3, "b": 3})
    lb = leaderboard.build(records + scored)
    assert lb.tasks["unequal"].all()
    assert list(lb.tasks.set_index("optimizer").loc[["adamw", "ademamix"], "configs"]) == [3, 6]
    assert "unequal budgets: ademamix 6 configs, the others 3" in export.title(lb, "lm")
    assert "unequal" not in export.title(
        leaderboard.build(records[:3] + records[9:] + scored), "lm"
    )


def test_the_table_shows_tuning_cost_and_flags() -> None:
    records = [
        tune("adamw", s, 2000.0 if lr == 1e-2 else 5000.0, lr=lr)
        for lr in (1e-3, 1e-2)
        for s in range(2)
    ]
    records += [make_record("lm", "adamw", s, 3000.0, hparams={"lr": 1e-2}) for s in (10, 11)]
    (row,) = leaderboard.build(records).tasks.itertuples()
    assert (row.trials, row.configs, row.compute_tokens, row.compute_grad_evals) == (
        4,
        2,
        40_000.0,
        800,
    )
    assert (row.swept, row.flags, row.runs) == ("lr=0.01", "lr at the top of its grid", 2)


# ---- the calibration rule ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "direction", "margin", "expected"),
    [
        ([3.0, 3.2, 3.1], "min", 0.0, 3.1),
        ([3.0, 3.2, 3.1, 3.3], "min", 0.1, 3.15 * 1.1),  # median 3.15, relaxed upwards by 10%
        ([0.8, 0.9, 0.7], "max", 0.05, 0.8 * 0.95),  # accuracy: relaxed downwards
        ([-2.0, -1.0, -3.0], "min", 0.5, -2.0 + 0.5 * 2.0),  # relative to the size |v|
        ([3.0, math.nan, 3.2], "min", 0.0, 3.2),  # a diverged run counts as the worst
    ],
)
def test_calibrated_value_by_hand(values, direction, margin, expected) -> None:
    assert selection.calibrated_value(values, direction, margin) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("values", "direction", "margin", "message"),
    [
        ([], "min", 0.0, "no calibration values"),
        ([1.0], "up", 0.0, "direction must be"),
        ([1.0], "min", -0.1, "margin must be >= 0"),
        ([math.inf, math.nan, 1.0], "min", 0.0, "more than half"),
    ],
)
def test_calibrated_value_refuses_bad_input(values, direction, margin, message) -> None:
    with pytest.raises(ValueError, match=message):
        selection.calibrated_value(values, direction, margin)
