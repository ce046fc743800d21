"""Metrics computed from a curve of evaluations: first crossing of a target, best values, and
whether the validation loss was as precise as the LM tasks aim for."""

from __future__ import annotations

import math
from collections.abc import Sequence

from bench_cli.results.record import Direction, EvalPoint, RunRecord, Target


def _lerp(x0: float, x1: float, frac: float) -> float:
    return x0 + (x1 - x0) * frac


def to_target(curve: Sequence[EvalPoint], target: Target) -> tuple[float, float, float] | None:
    """(tokens, seconds, steps) at the first crossing of ``target``, or None if never reached.

    The crossing is interpolated linearly between the last evaluation that missed the target and
    the first that reached it; an evaluation at step 0 that already meets it gives 0. Points
    without the target metric or with a non-finite value are ignored.
    """
    prev: EvalPoint | None = None
    for point in curve:
        value = point.metrics.get(target.metric)
        if value is None or value != value or value in (float("inf"), float("-inf")):
            continue
        if target.reached(value):
            if prev is None:
                return float(point.tokens), point.seconds, float(point.step)
            before = prev.metrics[target.metric]
            frac = (before - target.value) / (before - value) if before != value else 1.0
            return (
                _lerp(prev.tokens, point.tokens, frac),
                _lerp(prev.seconds, point.seconds, frac),
                _lerp(prev.step, point.step, frac),
            )
        prev = point
    return None


def best_metrics(curve: Sequence[EvalPoint], directions: dict[str, Direction]) -> dict[str, float]:
    """Per metric, the best finite value over the curve (lowest for 'min', highest for 'max')."""
    best: dict[str, float] = {}
    for point in curve:
        for name, value in point.metrics.items():
            if value != value or abs(value) == float("inf"):
                continue
            better = min if directions.get(name, "min") == "min" else max
            best[name] = value if name not in best else better(best[name], value)
    return best


#: the standard error of a validation loss that the LM tasks' defaults are sized to stay under
SE_GOAL = 0.005


def eval_batches_for(se: float, batches: int, goal: float = SE_GOAL) -> int:
    """Validation batches that bring a standard error ``se`` measured on ``batches`` down to
    ``goal``: the standard error of a mean of independent windows falls as one over the square
    root of their number (of stratified windows at least as fast, as their strata narrow)."""
    return max(batches, math.ceil(batches * (se / goal) ** 2))


def precision_note(record: RunRecord, goal: float = SE_GOAL) -> str | None:
    """One line when a run's validation loss was less precise than ``goal`` at any evaluation
    (the windows of the user's data differ more than the defaults were sized for), naming the
    ``eval_batches`` that would reach it; None otherwise."""
    ses = [
        p.metrics["val_loss_se"]
        for p in record.curve
        if math.isfinite(p.metrics.get("val_loss_se", math.nan))
    ]
    batches = record.task_options.get("eval_batches")
    if not ses or not isinstance(batches, int) or max(ses) <= goal:
        return None
    worst = max(ses)
    need = eval_batches_for(worst, batches)
    name = record.task_id or record.task
    return (
        f"{name} {record.optimizer}: val_loss_se reached {worst:.4f} (> {goal}); "
        f"--set eval_batches={need} would bring it to {goal} or below, "
        f"at {need / batches:.1f}x the evaluation time"
    )
