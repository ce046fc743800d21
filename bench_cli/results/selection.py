"""Choosing each optimizer's configuration from its tuning runs, and the calibration rule.

- ``select_configs``: per (task, optimizer), over the ``role == "tune"`` records, each
  configuration (its swept values, ``RunRecord.config``) is scored by its censored median
  tokens-to-target over the tuning seeds (a run that stopped short counts as "at least the
  tokens it trained", a diverged or crashed one as never). The smallest median wins; where no
  configuration's median is known (no target, or not reached by enough seeds), the best median
  of the best metric values wins (its direction respected; diverged = worst). Equal medians go
  to the better metric, then to the smaller canonical JSON key, so the choice is deterministic.
  The selection carries what tuning cost: trials (configurations x seeds), the tokens they
  trained and their gradient evaluations; and a flag for each swept numeric value that sits on
  the edge of its grid (the grid is the distinct values of that key among the optimizer's
  tuning records on the task).
- ``equal_budgets``: configurations per optimizer per task, to mark unequal tuning budgets.
- ``calibrated_value``: the calibrated target: the median over calibration seeds of the best
  values, relaxed by ``margin`` relative to its size.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from bench_cli.results import inference, stats
from bench_cli.results.record import RunRecord, Target


@dataclass(frozen=True)
class Selection:
    config: dict
    trials: int  # tuning runs: configurations x seeds
    tokens: float  # tokens (the task's unit) trained by the tuning runs
    grad_evals: int  # their gradient evaluations
    flags: list[str] = field(default_factory=list)  # "lr at the top of its grid"
    configs: int = 0  # configurations tried
    median_tokens: float = math.nan  # the winner's median tokens-to-target (nan: not known)
    best: float = math.nan  # the winner's median best metric value


def config_of(r: RunRecord) -> str:
    """Canonical key of a run's configuration: its swept values (else its full hparams)."""
    return json.dumps(r.config, sort_keys=True, default=str) if r.config else stats.config_key(r)


def _edge_flags(chosen: dict, records: Sequence[RunRecord]) -> list[str]:
    flags = []
    for key, value in sorted(chosen.items()):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        grid = {
            r.config[key]
            for r in records
            if isinstance(r.config.get(key), (int, float)) and not isinstance(r.config[key], bool)
        }
        if len(grid) < 2:
            continue
        if value >= max(grid):
            flags.append(f"{key} at the top of its grid")
        elif value <= min(grid):
            flags.append(f"{key} at the bottom of its grid")
    return flags


def _select_one(records: Sequence[RunRecord], target: Target | None) -> Selection:
    groups: dict[str, list[stats.Outcome]] = defaultdict(list)
    for r in records:
        groups[config_of(r)].append(stats.outcome(r, target))
    sign = -1.0 if target is not None and target.direction == "max" else 1.0
    ranked = []
    for key, outs in groups.items():
        lows = [o.tokens_low if o.record.status != "error" else math.inf for o in outs]
        highs = [o.tokens_high if o.record.status != "error" else math.inf for o in outs]
        summary = inference.summarize(lows, highs)
        time = summary.median if target is not None else math.nan
        best = float(np.median([sign * o.best for o in outs]))  # worst for diverged/errors
        ranked.append((time if math.isfinite(time) else math.inf, best, key, outs, time))
    time_rank, best, key, outs, time = min(ranked, key=lambda t: t[:3])
    chosen = dict(outs[0].record.config)
    return Selection(
        config=chosen,
        trials=len(records),
        tokens=float(sum(r.tokens_done for r in records)),
        grad_evals=int(sum(r.grad_evals for r in records)),
        flags=_edge_flags(chosen, records),
        configs=len(groups),
        median_tokens=time,
        best=sign * best,
    )


def select_from(
    records: Sequence[RunRecord], targets: Mapping[str, Target] | None = None
) -> dict[tuple[str, str], Selection]:
    """``select_configs`` against given targets (a task without one: its records' own)."""
    tune = [r for r in records if r.role == "tune"]
    targets = stats.analysis_targets(tune, targets)
    groups: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for r in tune:
        groups[(r.task_key, r.optimizer)].append(r)
    return {key: _select_one(runs, targets.get(key[0])) for key, runs in sorted(groups.items())}


def select_configs(records: Sequence[RunRecord]) -> dict[tuple[str, str], Selection]:
    """Per (task, optimizer), the configuration its tuning runs select (see the module)."""
    return select_from(records)


def equal_budgets(records: Sequence[RunRecord]) -> dict[str, dict[str, int]]:
    """Per task, configurations per optimizer: from its tuning runs where the task has any,
    else from its scored runs (an older folder that swept on the scored seeds)."""
    tuned_tasks = {r.task_key for r in records if r.role == "tune"}
    configs: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for r in records:
        role = "tune" if r.task_key in tuned_tasks else "score"
        if r.role == role:
            configs[r.task_key][r.optimizer].add(config_of(r))
    return {
        task: {opt: len(c) for opt, c in sorted(per.items())}
        for task, per in sorted(configs.items())
    }


def unequal(counts: Mapping[str, int]) -> bool:
    """True when the optimizers of one task tried different numbers of configurations."""
    return len(set(counts.values())) > 1


def calibrated_value(best_values: Sequence[float], direction: str, margin: float) -> float:
    """The median of ``best_values`` relaxed by ``margin``: ``v + margin*|v|`` for a metric to
    minimise, ``v - margin*|v|`` to maximise. Non-finite values (diverged) count as the worst."""
    if direction not in ("min", "max"):
        raise ValueError(f"direction must be 'min' or 'max', got {direction!r}")
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0 (a fraction of the value), got {margin}")
    if len(best_values) == 0:
        raise ValueError("no calibration values: run the baseline on calibration seeds first")
    worst = math.inf if direction == "min" else -math.inf
    values = [v if math.isfinite(v) else worst for v in best_values]
    value = float(np.median(values))
    if not math.isfinite(value):
        raise ValueError("more than half of the calibration runs diverged: no target to set")
    return value + margin * abs(value) if direction == "min" else value - margin * abs(value)
