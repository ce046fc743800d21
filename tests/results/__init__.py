"""Tests of the analysis side; ``make_record`` builds records whose numbers are easy to check.

A made-up run trains ``steps`` steps of ``TOKENS_PER_STEP`` tokens at ``TOKENS_PER_SECOND`` and
evaluates every ``EVAL_EVERY`` steps; its loss falls linearly from 2.0 and crosses the target 1.0
at exactly ``ttt`` tokens (None: it never gets below 1.2), then flattens at ``FLOOR``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench_cli.results.metrics import best_metrics, to_target
from bench_cli.results.record import Env, EvalPoint, RunRecord, Target
from bench_cli.results.store import write_record

TARGET = Target(metric="val_loss", value=1.0)
TOKENS_PER_STEP = 100
TOKENS_PER_SECOND = 1000.0
EVAL_EVERY = 10
FLOOR = 0.5
STEPS = 100  # budget: 10_000 tokens, 10 seconds
ENV = Env(device="cpu", device_name="cpu", torch="0", bench="0", python="3", platform="test")


def loss_at(tokens: float, ttt: float | None) -> float:
    if ttt is None:
        return 2.0 - 0.8 * tokens / (STEPS * TOKENS_PER_STEP)
    return max(2.0 - tokens / ttt, FLOOR)


def make_record(
    task: str = "lm",
    optimizer: str = "adamw",
    seed: int = 0,
    ttt: float | None = None,
    *,
    status: str = "done",
    hparams: dict[str, Any] | None = None,
    steps_done: int = STEPS,
    best: float | None = None,
    target: Target = TARGET,
) -> RunRecord:
    """One run; ``steps_done`` < ``STEPS`` with status 'diverged' stops the curve early."""
    curve = [
        EvalPoint(
            step=s,
            tokens=s * TOKENS_PER_STEP,
            seconds=s * TOKENS_PER_STEP / TOKENS_PER_SECOND,
            metrics={"val_loss": loss_at(s * TOKENS_PER_STEP, ttt)},
        )
        for s in range(0, steps_done + 1, EVAL_EVERY)
    ]
    hit = to_target(curve, target)
    bests = best_metrics(curve, {"val_loss": "min"})
    if best is not None:
        bests["val_loss"] = best
    hparams = hparams if hparams is not None else {"lr": 1e-3}
    tag = "_".join(f"{k}{v}" for k, v in sorted(hparams.items()))
    return RunRecord(
        run_id=f"{task}__{optimizer}__seed{seed}__{tag}",
        task=task,
        task_options={},
        optimizer=optimizer,
        hparams=hparams,
        settings={"steps": STEPS, "warmup_steps": 0, "device": "cpu"},
        seed=seed,
        unit="tokens",
        status=status,
        error="RuntimeError: boom" if status == "error" else None,
        target=target,
        tokens_to_target=hit[0] if hit else None,
        seconds_to_target=hit[1] if hit else None,
        steps_to_target=hit[2] if hit else None,
        metric_directions={"val_loss": "min"},
        final_metrics=dict(curve[-1].metrics),
        best_metrics=bests,
        curve=curve,
        steps_done=steps_done,
        tokens_done=steps_done * TOKENS_PER_STEP,
        train_seconds=steps_done * TOKENS_PER_STEP / TOKENS_PER_SECOND,
        tokens_per_second=TOKENS_PER_SECOND,
        optimizer_state_bytes=2 * 2**20,
        env=ENV,
        started_at="2025-01-01T00:00:00",
        finished_at="2025-01-01T00:00:10",
    )


def write_all(directory: Path, records: list[RunRecord]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for r in records:
        write_record(r, directory)
    return directory


def suite(seeds: tuple[int, ...] = (0, 1, 2)) -> list[RunRecord]:
    """Two tasks, three optimizers: 'fast' reaches the target in half adamw's tokens on both,
    'slow' needs 1.5x on 'lm' and never reaches it on 'valley'."""
    records = []
    for seed in seeds:
        jitter = 100.0 * seed
        for task in ("lm", "valley"):
            records.append(make_record(task, "adamw", seed, 4000.0 + jitter))
            records.append(make_record(task, "fast", seed, 2000.0 + jitter / 2))
            slow = 6000.0 + 1.5 * jitter if task == "lm" else None
            records.append(make_record(task, "slow", seed, slow))
    return records
