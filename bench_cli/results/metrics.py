"""Metrics computed from a curve of evaluations: first crossing of a target, best values."""

from __future__ import annotations

from collections.abc import Sequence

from bench_cli.results.record import Direction, EvalPoint, Target


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
