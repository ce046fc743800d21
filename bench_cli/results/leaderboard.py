"""The leaderboard: a per-task table and an overall ranking, pure functions of run records.

Only scored runs (``role == "score"``) make the table; each (task, optimizer) is represented by
its scored configuration (``stats.best_config``). Tuning runs add what tuning cost (trials,
tokens, gradient evaluations) and the edge-of-grid flags of the selection
(``bench_cli.results.selection``). The statistical rules are documented in
``bench_cli.results.stats`` and ``bench_cli.results.inference``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from bench_cli.errors import BenchError
from bench_cli.results import inference, selection, stats
from bench_cli.results.defaults import DEFAULT_BASELINE
from bench_cli.results.record import RunRecord, Target

#: the per-task table's columns; "tokens" counts the task's unit (tokens, images or steps).
#: ``X`` is the median over seeds (nan unless known), ``X_low`` what it is known to be at least,
#: ``X_lo``/``X_hi`` its order-statistic interval at true coverage ``X_level`` (nan for one
#: seed, where ``X_lo``/``X_hi`` are that run's own bounds),
#: ``X_hi_low`` the known lower bound of a censored ``X_hi`` (inf). ``speedup_lo``/``_hi`` bound
#: the speedup where censoring leaves it open.
_SUMMARY = ("", "_low", "_lo", "_hi", "_hi_low", "_level")
TASK_COLUMNS = [
    "task", "optimizer", "unit", "metric", "direction", "target", "seed_independent", "runs",
    "reached", "diverged", "errors",
    *(f"tokens_to_target{s}" for s in _SUMMARY), *(f"seconds_to_target{s}" for s in _SUMMARY),
    "speedup", "speedup_lo", "speedup_hi", "pairs", "verdict", "p_better", "p_worse", "alpha",
    "best", "best_lo", "best_hi", "best_level", "final", "tokens_per_second", "state_mb",
    "grad_evals", "configs", "unequal", "swept", "flags", "trials", "compute_tokens",
    "compute_grad_evals", "compute_seconds", "config",
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
    alpha: float = inference.ALPHA
    budgets: dict[str, dict[str, int]] | None = None  # configurations per optimizer per task


def _median(values: Sequence[float | None]) -> float:
    x = [float(v) for v in values if v is not None and not math.isnan(v)]
    return float(np.median(x)) if x else math.nan


def _summary(prefix: str, s: inference.MedianSummary) -> dict:
    values = (s.median, s.median_low, s.lo, s.hi, s.hi_low, s.level)
    return {f"{prefix}{suffix}": v for suffix, v in zip(_SUMMARY, values)}


def _selected(lows, highs, configs: int) -> inference.MedianSummary:
    """The median interval of a configuration picked among ``configs`` on these very seeds: each
    configuration's interval at coverage ``1 - (1 - LEVEL) / configs``, so that the picked one's
    covers its median with probability at least ``1 - configs x (1 - that)``, the level stated."""
    if configs <= 1:
        return inference.summarize(lows, highs)
    s = inference.summarize(lows, highs, level=1 - (1 - inference.LEVEL) / configs)
    return replace(s, level=max(0.0, 1 - configs * (1 - s.level)))


def _swept(config: dict) -> str:
    return ", ".join(
        f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in sorted(config.items())
    )


def _row(
    task: str,
    optimizer: str,
    choice: stats.ConfigChoice,
    target: Target | None,
    speedup: stats.Speedup,
    errors: int,
    tuned: selection.Selection | None,
    configs: int,
) -> dict:
    runs = stats.one_observation(choice.runs)
    records = [o.record for o in runs]
    sign = -1.0 if target is not None and target.direction == "max" else 1.0
    best = _selected([sign * o.best for o in runs], None, choice.configs)
    best_lo, best_hi = sorted((sign * best.lo, sign * best.hi))
    if tuned is not None:  # the tune/score protocol: tuning cost from the tuning runs
        trials, tokens, grads = tuned.trials, tuned.tokens, tuned.grad_evals
        seconds = math.nan
        swept, flags = _swept(tuned.config), "; ".join(tuned.flags)
    else:  # swept on the scored seeds (older folders): cost of all scored runs
        trials, tokens, seconds = choice.trials, choice.compute_tokens, choice.compute_seconds
        grads = sum(o.record.grad_evals for o in choice.runs)
        swept, flags = choice.swept, ""
    return {
        "task": task,
        "optimizer": optimizer,
        "unit": records[0].unit if records else "tokens",
        "metric": target.metric if target else None,
        "direction": target.direction if target else None,
        "target": target.value if target else math.nan,
        "seed_independent": any(r.seed_independent for r in records),
        "runs": len(runs),
        "reached": sum(o.tokens is not None for o in runs),
        "diverged": sum(r.status == "diverged" for r in records),
        "errors": errors,
        **_summary("tokens_to_target", _selected(
            [o.tokens_low for o in runs], [o.tokens_high for o in runs], choice.configs)),
        **_summary("seconds_to_target", _selected(
            [o.seconds_low for o in runs], [o.seconds_high for o in runs], choice.configs)),
        "speedup": speedup.value,
        "speedup_lo": speedup.lo,
        "speedup_hi": speedup.hi,
        "pairs": speedup.pairs,
        "verdict": speedup.verdict,
        "p_better": speedup.p_better,
        "p_worse": speedup.p_worse,
        "alpha": math.nan,
        "best": sign * best.median,
        "best_lo": best_lo,
        "best_hi": best_hi,
        "best_level": best.level,
        "final": _median([o.final for o in runs]),
        "tokens_per_second": _median([r.tokens_per_second for r in records]),
        "state_mb": _median([r.optimizer_state_bytes / 2**20 for r in records]),
        "grad_evals": _median([float(r.grad_evals or math.nan) for r in records]),  # 0: unknown
        "configs": configs,
        "unequal": False,
        "swept": swept,
        "flags": flags,
        "trials": trials,
        "compute_tokens": tokens,
        "compute_grad_evals": grads,
        "compute_seconds": seconds,
        "config": choice.config,
    }  # fmt: skip


def _task_frame(
    choices: Mapping[tuple[str, str], stats.ConfigChoice],
    errors: Mapping[tuple[str, str], int],
    targets: Mapping[str, Target],
    baseline: str,
    alpha: float,
    tuned: Mapping[tuple[str, str], selection.Selection],
    budgets: Mapping[str, Mapping[str, int]],
) -> pd.DataFrame:
    rows = []
    for (task, opt), choice in choices.items():
        base = choices.get((task, baseline))
        # a configuration picked among k on the very seeds it is judged on (no tuning seeds):
        # the test at alpha / k for each side picked so (Bonferroni), which keeps its level
        level = alpha / (choice.configs * (base.configs if base and opt != baseline else 1))
        speedup = stats.paired_speedup(base.runs if base else [], choice.runs, level)
        if opt == baseline:
            speedup = stats.Speedup(
                speedup.value, speedup.lo, speedup.hi, speedup.pairs, "baseline"
            )
        per_task = budgets.get(task, {})
        row = _row(
            task, opt, choice, targets.get(task), speedup, errors.get((task, opt), 0),
            tuned.get((task, opt)), per_task.get(opt, choice.configs),
        )  # fmt: skip
        row["unequal"] = selection.unequal(per_task)
        row["alpha"] = level
        rows.append(row)
    df = pd.DataFrame(rows, columns=TASK_COLUMNS)
    order = df["tokens_to_target"].fillna(math.inf)
    low = df["tokens_to_target_low"].fillna(math.inf)
    return (
        df.assign(_order=order, _low=low)
        .sort_values(["task", "_order", "_low", "optimizer"], kind="stable")
        .drop(columns=["_order", "_low"])
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
                "compute_seconds": float(per_opt["compute_seconds"].sum(min_count=1)),
            }
        )
    df = pd.DataFrame(rows, columns=[c for c in RANKING_COLUMNS if c != "rank"])
    df = df.sort_values(
        ["profile_score", "speedup", "optimizer"],
        ascending=[False, False, True],
        na_position="last",
        kind="stable",
    ).reset_index(drop=True)
    # equal scores share a rank (the name only orders the rows): with no target reached by
    # anyone, every optimizer is first, not first to last by name
    keys = list(zip(df["profile_score"].fillna(-math.inf), df["speedup"].fillna(-math.inf)))
    ranks: list[int] = []
    for i, key in enumerate(keys):
        ranks.append(ranks[-1] if i and key == keys[i - 1] else i + 1)
    df.insert(0, "rank", ranks)
    return df


def _check_units(records: Sequence[RunRecord]) -> None:
    """One unit per task variant: speedups and tokens-to-target across tokens and steps (a
    record edited by hand, or a plug-in task that changed its unit) would mean nothing."""
    units: dict[str, dict[str, str]] = {}
    for r in records:
        units.setdefault(r.task_key, {}).setdefault(r.unit, r.run_id)
    for task, seen in units.items():
        if len(seen) > 1:
            which = ", ".join(f"{unit} ({run_id})" for unit, run_id in sorted(seen.items()))
            raise BenchError(
                f"task {task!r} has runs counted in different units: {which}; keep the runs of "
                "one unit in the folder (another --out for the others)"
            )


def build(
    records: Sequence[RunRecord],
    baseline: str = DEFAULT_BASELINE,
    targets: Mapping[str, Target] | None = None,
    alpha: float = inference.ALPHA,
) -> Leaderboard:
    """Both tables from the records alone; ``targets`` overrides a task's target (calibrated).

    Only scored runs make rows; tuning runs add the selection's cost and flags."""
    inference.min_pairs(alpha)  # refuses a level outside (0, 1)
    _check_units(records)
    choices, targets = stats.kept_choices(records, targets)
    errors: dict[tuple[str, str], int] = {}
    for r in stats.scored(records):
        key = (r.task_key, r.optimizer)
        errors[key] = errors.get(key, 0) + (r.status == "error")
    tuned = selection.select_from(records, targets)
    budgets = selection.equal_budgets(records)
    tasks = _task_frame(choices, errors, targets, baseline, alpha, tuned, budgets)
    times: dict[str, dict[str, float]] = {}
    for row in tasks.itertuples():
        times.setdefault(row.task, {})[row.optimizer] = row.tokens_to_target
    ratios = stats.profile_ratios(times)
    ranking = _ranking_frame(tasks, ratios)
    return Leaderboard(baseline, targets, tasks, ranking, ratios, alpha, budgets)


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
