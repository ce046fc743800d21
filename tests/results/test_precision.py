"""The note on an imprecise validation loss, and whether the eval_batches it names reach the goal.

The check of the claim: per-window losses are simulated with a known spread; the standard error
measured on the first evaluation sizes the suggestion, and a fresh evaluation of that size lands
at the goal. Independent expectation: the standard error of a mean of n independent windows is
sigma / sqrt(n)."""

from __future__ import annotations

import math

import numpy as np

from bench_cli.results.metrics import SE_GOAL, eval_batches_for, precision_note
from bench_cli.results.record import EvalPoint
from tests.results import make_record

BATCH = 32


def _se(rng: np.random.Generator, sigma: float, batches: int) -> float:
    losses = rng.normal(3.0, sigma, size=batches * BATCH)
    return float(losses.std(ddof=1) / math.sqrt(losses.size))


def test_suggested_eval_batches_reach_the_goal_on_simulated_windows() -> None:
    rng = np.random.default_rng(0)
    after = []
    for sigma in (0.3, 0.8, 1.5):  # prose-like to code-like spreads of per-window losses
        for _ in range(200):
            first = _se(rng, sigma, 100)
            assert first > SE_GOAL
            after.append(_se(rng, sigma, eval_batches_for(first, 100)))
    after = np.array(after)
    assert abs(after.mean() - SE_GOAL) < 0.02 * SE_GOAL  # lands on the goal, not short of it
    assert (after <= 1.05 * SE_GOAL).mean() > 0.95


def test_eval_batches_for_hand_computed() -> None:
    assert eval_batches_for(0.014, 100) == 784  # 100 x (0.014 / 0.005)^2
    assert eval_batches_for(0.003, 100) == 100  # already precise: never fewer


def _with_se(ses: list[float], eval_batches: int | None = 100):
    rec = make_record(task="lm-gpt2")
    curve = [
        EvalPoint(step=i, tokens=i, seconds=float(i), metrics={"val_loss": 3.0, "val_loss_se": se})
        for i, se in enumerate(ses)
    ]
    options = {} if eval_batches is None else {"eval_batches": eval_batches}
    return rec.model_copy(update={"curve": curve, "task_options": options})


def test_note_names_the_worst_evaluation_and_the_batches() -> None:
    note = precision_note(_with_se([0.002, 0.014, 0.011]))
    assert note == (
        "lm-gpt2 adamw: val_loss_se reached 0.0140 (> 0.005); --set eval_batches=784 would "
        "bring it to 0.005 or below, at 7.8x the evaluation time"
    )


def test_no_note_when_precise_or_not_an_lm_task() -> None:
    assert precision_note(_with_se([0.001, 0.0049])) is None
    assert precision_note(_with_se([0.014], eval_batches=None)) is None  # nothing to raise
    assert precision_note(make_record()) is None  # no val_loss_se at all
    assert precision_note(_with_se([float("nan")])) is None  # a diverged first evaluation
    assert "reached 0.0140" in precision_note(_with_se([float("nan"), 0.014]))
