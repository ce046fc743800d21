"""First crossing of a target and best values, against hand-computed cases."""

from __future__ import annotations

import pytest

from bench_cli.results.metrics import best_metrics, to_target
from bench_cli.results.record import EvalPoint, Target


def curve(values, metric="val_loss", per_step=10):
    return [
        EvalPoint(step=s, tokens=s * per_step, seconds=s * 0.5, metrics={metric: v})
        for s, v in zip(range(0, 100 * len(values), 100), values)
    ]


def test_crossing_is_interpolated_between_evaluations() -> None:
    # 3.0 at step 100, 1.0 at step 200; target 2.5 is a quarter of the way: step 125
    got = to_target(curve([4.0, 3.0, 1.0, 0.5]), Target(metric="val_loss", value=2.5))
    assert got == (1250.0, 62.5, 125.0)


def test_first_crossing_counts_even_if_the_curve_goes_back_up() -> None:
    got = to_target(curve([4.0, 2.0, 5.0, 1.0]), Target(metric="val_loss", value=3.0))
    assert got is not None and got[2] == 50.0


def test_never_reached_is_none_not_the_budget() -> None:
    assert to_target(curve([4.0, 3.0, 2.9]), Target(metric="val_loss", value=2.0)) is None


def test_reached_at_start_is_zero() -> None:
    assert to_target(curve([1.0, 0.5]), Target(metric="val_loss", value=2.0)) == (0.0, 0.0, 0.0)


def test_max_direction_and_nan_points_skipped() -> None:
    pts = curve([0.1, float("nan"), 0.5, 0.9], metric="acc")
    # nan at step 100 is skipped: 0.1 (step 0) -> 0.5 (step 200) crosses 0.3 halfway, step 100
    got = to_target(pts, Target(metric="acc", value=0.3, direction="max"))
    assert got == pytest.approx((1000.0, 50.0, 100.0))
    assert best_metrics(pts, {"acc": "max"}) == {"acc": 0.9}


def test_best_metrics_follows_direction() -> None:
    assert best_metrics(curve([3.0, 1.0, 2.0]), {"val_loss": "min"}) == {"val_loss": 1.0}
