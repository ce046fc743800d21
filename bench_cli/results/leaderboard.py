"""The leaderboard: a per-task table and an overall ranking, pure functions of run records.

Each (task, optimizer) is represented by its best configuration (``stats.best_config``); the
statistical rules are documented in ``bench_cli.results.stats``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench_cli.results import stats
from bench_cli.results.record import RunRecord, Target

DEFAULT_BASELINE = "adamw"

#: the per-task table's columns; "tokens" counts the task's unit (tokens, images or steps)
TASK_COLUMNS = [
    "task", "optimizer", "unit", "metric", "direction", "target", "runs", "reached", "diverged",
    "errors", "tokens_to_target", "tokens_to_target_lo", "tokens_to_target_hi",
    "seconds_to_target", "seconds_to_target_lo", "seconds_to_target_hi", "speedup", "speedup_lo",
    "speedup_hi", "pairs", "verdict", "best", "best_lo", "best_hi", "final", "tokens_per_second",
    "state_mb", "configs", "swept", "trials", "compute_tokens", "compute_seconds", "config",
]  # fmt: skip
RANKING_COLUMNS = [
    "rank", "optimizer", "tasks", "reached", "speedup", "speedup_tasks", "profile_score",
    "trials", "compute_seconds",
]  # fmt: skip


@dataclass(frozen=True)
class Leaderboard:
    baseline: str
    targets: dict[str, Target]
    tasks: pd.DataFrame  # one row per (task, optimizer), TASK_COLUMNS
    ranking: pd.DataFrame  # one row per optimizer, RANKING_COLUMNS
    ratios: dict[str, dict[str, float]]  # performance-profile ratios[optimizer][task]


def _median(values: Sequence[float | None]) -> float:
    x = [float(v) for v in values if v is not None and not math.isnan(v)]
    return float(np.median(x)) if x else math.nan


def _row(
    task: str,
    optimizer: str,
    choice: stats.ConfigChoice,
    target: Target | None,
    speedup: stats.Speedup,
    errors: int,
) -> dict:
    runs = choice.runs
    records = [o.record for o in runs]
    ttt = stats.summarize_censored([o.tokens for o in runs])
    stt = stats.summarize_censored([o.seconds for o in runs])
    best, best_lo, best_hi = stats.median_ci([o.best for o in runs])
    return {
        "task": task,
        "optimizer": optimizer,
        "unit": records[0].unit if records else "tokens",
        "metric": target.metric if target else None,
        "direction": target.direction if target else None,
        "target": target.value if target else math.nan,
        "runs": ttt.total,
        "reached": ttt.reached,
        "diverged": sum(r.status == "diverged" for r in records),
        "errors": errors,
        "tokens_to_target": ttt.median,
        "tokens_to_target_lo": ttt.lo,
        "tokens_to_target_hi": ttt.hi,
        "seconds_to_target": stt.median,
        "seconds_to_target_lo": stt.lo,
        "seconds_to_target_hi": stt.hi,
        "speedup": speedup.value,
        "speedup_lo": speedup.lo,
        "speedup_hi": speedup.hi,
        "pairs": speedup.pairs,
        "verdict": speedup.verdict,
        "best": best,
        "best_lo": best_lo,
        "best_hi": best_hi,
        "final": _median([o.final for o in runs]),
        "tokens_per_second": _median([r.tokens_per_second for r in records]),
        "state_mb": _median([r.optimizer_state_bytes / 2**20 for r in records]),
        "configs": choice.configs,
        "swept": choice.swept,
        "trials": choice.trials,
        "compute_tokens": choice.compute_tokens,
        "compute_seconds": choice.compute_seconds,
        "config": choice.config,
    }


def _task_frame(
    choices: Mapping[tuple[str, str], stats.ConfigChoice],
    errors: Mapping[tuple[str, str], int],
    targets: Mapping[str, Target],
    baseline: str,
) -> pd.DataFrame:
    rows = []
    for (task, opt), choice in choices.items():
        base = choices.get((task, baseline))
        speedup = stats.paired_speedup(base.runs if base else [], choice.runs)
        if opt == baseline:
            speedup = stats.Speedup(
                speedup.value, speedup.lo, speedup.hi, speedup.pairs, "baseline"
            )
        rows.append(_row(task, opt, choice, targets.get(task), speedup, errors.get((task, opt), 0)))
    df = pd.DataFrame(rows, columns=TASK_COLUMNS)
    order = df["tokens_to_target"].fillna(math.inf)
    return (
        df.assign(_order=order)
        .sort_values(["task", "_order", "optimizer"], kind="stable")
        .drop(columns="_order")
        .reset_index(drop=True)
    )


def _ranking_frame(tasks: pd.DataFrame, ratios: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    rows = []
    for opt, per_opt in tasks.groupby("optimizer", sort=True):
        reached = per_opt["tokens_to_target"].notna()
        rows.append(
            {
                "optimizer": opt,
                "tasks": len(per_opt),
                "reached": int(reached.sum()),
                "speedup": stats.geometric_mean(per_opt["speedup"]),
                "speedup_tasks": int(per_opt["speedup"].notna().sum()),
                "profile_score": stats.profile_score(ratios.get(opt, {})),
                "trials": int(per_opt["trials"].sum()),
                "compute_seconds": float(per_opt["compute_seconds"].sum()),
            }
        )
    df = pd.DataFrame(rows, columns=[c for c in RANKING_COLUMNS if c != "rank"])
    df = df.sort_values(
        ["profile_score", "speedup", "optimizer"],
        ascending=[False, False, True],
        na_position="last",
        kind="stable",
    ).reset_index(drop=True)
    df.insert(0, "rank", range(1, len(df) + 1))
    return df


def build(
    records: Sequence[RunRecord],
    baseline: str = DEFAULT_BASELINE,
    targets: Mapping[str, Target] | None = None,
) -> Leaderboard:
    """Both tables from the records alone; ``targets`` overrides a task's target (calibrated)."""
    targets = stats.analysis_targets(records, targets)
    outs = stats.outcomes(records, targets)
    choices = stats.best_configs(outs, targets)
    errors: dict[tuple[str, str], int] = {}
    for o in outs:
        key = (o.record.task_key, o.record.optimizer)
        errors[key] = errors.get(key, 0) + (o.record.status == "error")
    tasks = _task_frame(choices, errors, targets, baseline)
    times: dict[str, dict[str, float]] = {}
    for row in tasks.itertuples():
        times.setdefault(row.task, {})[row.optimizer] = row.tokens_to_target
    ratios = stats.profile_ratios(times)
    return Leaderboard(baseline, targets, tasks, _ranking_frame(tasks, ratios), ratios)


def task_table(
    records: Sequence[RunRecord],
    baseline: str = DEFAULT_BASELINE,
    targets: Mapping[str, Target] | None = None,
) -> pd.DataFrame:
    return build(records, baseline, targets).tasks


def ranking_table(
    records: Sequence[RunRecord],
    baseline: str = DEFAULT_BASELINE,
    targets: Mapping[str, Target] | None = None,
) -> pd.DataFrame:
    return build(records, baseline, targets).ranking
