"""Tables are pure functions from records to pandas DataFrames (no torch here)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from bench_cli.results.record import RunRecord


def run_summary(records: Sequence[RunRecord]) -> pd.DataFrame:
    """One row per run: the figures a user reads after ``bench run``."""
    rows = []
    for r in records:
        metric = r.target.metric if r.target else None
        rows.append(
            {
                "task": r.task,
                "optimizer": r.optimizer,
                "seed": r.seed,
                "status": r.status,
                "target": f"{metric} {'<=' if r.target.direction == 'min' else '>='} {r.target.value:g}"
                if r.target
                else None,
                f"best {metric}": r.best_metrics.get(metric) if metric else None,
                f"final {metric}": r.final_metrics.get(metric) if metric else None,
                f"{r.unit} to target": r.tokens_to_target,
                "seconds to target": r.seconds_to_target,
                "steps": r.steps_done,
                "train seconds": r.train_seconds,
                f"{r.unit}/s": r.tokens_per_second,
                "state MB": r.optimizer_state_bytes / 2**20,
            }
        )
    return pd.DataFrame(rows)
