"""Censoring-aware statistics over seeds: medians, bootstrap intervals, sweeps, speedups, profiles.

The rules, the same for every optimizer and task:

- **Censoring.** A run that never reaches the target has no time-to-target (``None``); it is
  right-censored, not infinite and not "the budget". For medians it sorts after every run that
  reached the target (``+inf`` in the arithmetic), so the median over seeds is reported only when
  more than half of the seeds reached the target; otherwise it is ``nan`` and tables show how many
  reached it. Runs with status ``error`` crashed and are not results: they are left out of every
  statistic (but counted as trials, compute and errors).
- **Intervals.** A percentile bootstrap over seeds: ``BOOTSTRAP_SAMPLES`` resamples with a fixed
  numpy seed, so the same records always give the same interval. With one seed, or all seeds
  equal, the interval collapses to the point. An upper bound of ``inf`` means "censored".
- **Best configuration** per (task, optimizer): the configuration (hparams, plus the run settings
  that change training) with the best median over seeds of each run's best value of the target
  metric, respecting its direction; a diverged run counts as the worst value. Ties go to the
  configuration with more seeds, then to the smaller canonical JSON key.
- **Speedup** over the baseline, paired over the seeds both best configurations share: per seed
  ``baseline_tokens / optimizer_tokens``, where a censored run counts as taking exactly its budget
  (the planned steps times the tokens per step; it would have needed at least that). This bounds
  every ratio that involves a censored run and shrinks it toward 1 (both censored: about 1), so a
  verdict is never driven by censoring. The speedup is the geometric mean of the per-seed ratios
  with a bootstrap interval over seeds; "better" / "worse" only when the interval excludes 1 and at
  least ``MIN_PAIRS_FOR_VERDICT`` seeds are paired, else "tie" (or "n/a" without pairs).
- **Performance profile** (AlgoPerf): per task, an optimizer's median tokens-to-target over the
  best one's (``inf`` when its median is censored or it did not run on the task);
  ``rho(tau)`` is the fraction of tasks with ratio <= tau and the score is the area under ``rho``
  over ``tau`` in ``[1, tau_max]`` divided by ``tau_max - 1`` (1 = fastest everywhere, 0 = never
  within ``tau_max`` of the fastest).
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from bench_cli.results.metrics import to_target
from bench_cli.results.record import RunRecord, Target

BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0
ALPHA = 0.05  # two-sided: 95% intervals
MIN_PAIRS_FOR_VERDICT = 2
TAU_MAX = 4.0  # AlgoPerf's upper limit of the profile
MIN_TIME = 1.0  # a run that meets the target at its first evaluation counts as one unit
#: run settings that change the training trajectory, hence part of a configuration
TRAINING_SETTINGS = ("steps", "warmup_steps", "schedule", "min_lr_ratio", "grad_clip")


# ---- intervals ---------------------------------------------------------------------------------


def bootstrap_ci(
    values: Sequence[float],
    statistic: Callable[[np.ndarray], np.ndarray],
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` (applied along axis 1) over ``values``.

    Resamples ``values`` with replacement; the bounds are order statistics (no interpolation, so
    ``inf`` values stay ``inf`` instead of turning into ``nan``).
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    stats = np.sort(statistic(x[rng.integers(0, x.size, size=(samples, x.size))]))
    lo = stats[int(math.floor(samples * ALPHA / 2))]
    hi = stats[int(math.ceil(samples * (1 - ALPHA / 2))) - 1]
    return float(lo), float(hi)


def _median_rows(x: np.ndarray) -> np.ndarray:
    return np.median(x, axis=1)


def _geomean_rows(x: np.ndarray) -> np.ndarray:
    return np.exp(np.mean(np.log(x), axis=1))


@dataclass(frozen=True)
class CensoredSummary:
    """Median over seeds with its bootstrap interval; ``median`` is nan unless > half reached."""

    median: float
    lo: float
    hi: float
    reached: int
    total: int


def _as_censored(values: Iterable[float | None]) -> np.ndarray:
    return np.array([math.inf if v is None else float(v) for v in values], dtype=float)


def censored_median(values: Sequence[float | None]) -> float:
    """Median with ``None`` (censored) sorted last; nan unless more than half are not censored."""
    x = _as_censored(values)
    if x.size == 0:
        return math.nan
    median = float(np.median(x))  # finite exactly when more than half are finite
    return median if math.isfinite(median) else math.nan


def summarize_censored(values: Sequence[float | None]) -> CensoredSummary:
    x = _as_censored(values)
    lo, hi = bootstrap_ci(x, _median_rows)
    reached = int(np.isfinite(x).sum())
    return CensoredSummary(censored_median(values), lo, hi, reached, int(x.size))


def median_ci(values: Sequence[float]) -> tuple[float, float, float]:
    """Plain median (``inf`` allowed) and its bootstrap interval."""
    if not values:
        return math.nan, math.nan, math.nan
    return (float(np.median(np.asarray(values, dtype=float))), *bootstrap_ci(values, _median_rows))


def geomean_ci(ratios: Sequence[float]) -> tuple[float, float, float]:
    """Geometric mean of positive ``ratios`` and its bootstrap interval."""
    if not ratios:
        return math.nan, math.nan, math.nan
    gm = float(np.exp(np.mean(np.log(np.asarray(ratios, dtype=float)))))
    return (gm, *bootstrap_ci(ratios, _geomean_rows))


# ---- runs against a target ---------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """One run seen against its task's analysis target."""

    record: RunRecord
    config: str  # canonical JSON of the configuration
    tokens: float | None  # tokens to target; None = censored
    seconds: float | None
    best: float  # best value of the target metric; the worst value if diverged or missing
    final: float
    budget: float  # planned tokens (steps x tokens per step); nan when unknown


def config_key(record: RunRecord) -> str:
    settings = {k: record.settings[k] for k in TRAINING_SETTINGS if k in record.settings}
    return json.dumps(
        {"hparams": record.hparams, "settings": settings}, sort_keys=True, default=str
    )


def analysis_targets(
    records: Sequence[RunRecord], override: Mapping[str, Target] | None = None
) -> dict[str, Target]:
    """One target per task: ``override`` where given, else the most common one in its records."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for r in records:
        if r.target is not None:
            counts[r.task_key][r.target] += 1
    targets = {
        task: min(c.items(), key=lambda kv: (-kv[1], kv[0].metric, kv[0].value))[0]
        for task, c in counts.items()
    }
    targets.update(override or {})
    return targets


def _budget(r: RunRecord) -> float:
    steps = r.settings.get("steps")
    if r.steps_done > 0:
        per_step = r.tokens_done / r.steps_done
    elif r.curve and r.curve[-1].step > 0:
        per_step = r.curve[-1].tokens / r.curve[-1].step
    else:
        return math.nan
    return max(float(r.tokens_done), per_step * steps) if steps else float(r.tokens_done)


def outcome(r: RunRecord, target: Target | None) -> Outcome:
    if target is None:
        hit = None
    elif r.target == target:  # the runner's own crossing, already interpolated
        hit = None if r.tokens_to_target is None else (r.tokens_to_target, r.seconds_to_target)
    else:  # another target (e.g. calibrated later): recompute it from the curve
        crossing = to_target(r.curve, target)
        hit = None if crossing is None else crossing[:2]
    worst = math.inf if target is None or target.direction == "min" else -math.inf
    metric = target.metric if target else ""
    best = r.best_metrics.get(metric, worst) if r.status == "done" else worst
    final = r.final_metrics.get(metric, math.nan)
    return Outcome(
        record=r,
        config=config_key(r),
        tokens=None if hit is None else hit[0],
        seconds=None if hit is None else hit[1],
        best=best,
        final=final,
        budget=_budget(r),
    )


def outcomes(
    records: Sequence[RunRecord], targets: Mapping[str, Target] | None = None
) -> list[Outcome]:
    targets = analysis_targets(records, targets)
    return [outcome(r, targets.get(r.task_key)) for r in records]


# ---- sweeps: best configuration and cost -------------------------------------------------------


@dataclass(frozen=True)
class ConfigChoice:
    config: str
    score: float  # median over seeds of the best target-metric value
    runs: list[Outcome]  # its non-error runs, one per seed
    configs: int  # configurations tried
    trials: int  # runs of all configurations (configurations x seeds)
    compute_tokens: float
    compute_seconds: float
    swept: str  # the chosen values of what the sweep varied: "lr=0.003" ('' without a sweep)


def swept_values(configs: Sequence[str], chosen: str) -> str:
    """``key=value`` for each hparam or setting whose value differs between ``configs``."""
    flat = []
    for config in configs:
        data = json.loads(config)
        flat.append({**data["settings"], **data["hparams"]})
    keys = sorted({k for f in flat for k in f if len({json.dumps(g.get(k)) for g in flat}) > 1})
    mine = flat[list(configs).index(chosen)]
    text = {k: v if isinstance(v, str) else json.dumps(v) for k, v in mine.items()}
    return ", ".join(f"{k}={text.get(k, 'null')}" for k in keys)


def _one_per_seed(runs: Iterable[Outcome]) -> list[Outcome]:
    by_seed: dict[int, Outcome] = {}
    for o in sorted(runs, key=lambda o: (o.record.seed, o.record.run_id)):
        by_seed.setdefault(o.record.seed, o)
    return list(by_seed.values())


def best_config(runs: Sequence[Outcome], direction: str = "min") -> ConfigChoice:
    """The configuration of one (task, optimizer) with the best median of best values."""
    by_config: dict[str, list[Outcome]] = defaultdict(list)
    for o in runs:
        by_config[o.config].append(o)
    sign = 1.0 if direction == "min" else -1.0
    scored = []
    for config, group in by_config.items():
        kept = _one_per_seed(o for o in group if o.record.status != "error")
        score = float(np.median([o.best for o in kept])) if kept else math.nan
        rank = sign * score if kept else math.inf
        scored.append((rank, -len(kept), config, score, kept))
    _, _, config, score, kept = min(scored, key=lambda s: s[:3])
    return ConfigChoice(
        config=config,
        score=score,
        runs=kept,
        configs=len(by_config),
        trials=len(runs),
        compute_tokens=float(sum(o.record.tokens_done for o in runs)),
        compute_seconds=float(sum(o.record.train_seconds for o in runs)),
        swept=swept_values(list(by_config), config),
    )


def best_configs(
    outs: Sequence[Outcome], targets: Mapping[str, Target]
) -> dict[tuple[str, str], ConfigChoice]:
    groups: dict[tuple[str, str], list[Outcome]] = defaultdict(list)
    for o in outs:
        groups[(o.record.task_key, o.record.optimizer)].append(o)
    return {
        key: best_config(runs, targets[key[0]].direction if key[0] in targets else "min")
        for key, runs in sorted(groups.items())
    }


# ---- paired speedup ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Speedup:
    value: float  # geometric mean over paired seeds of baseline / optimizer tokens-to-target
    lo: float
    hi: float
    pairs: int
    verdict: str  # better, worse, tie or n/a


def _time_or_budget(o: Outcome) -> float:
    return max(o.tokens if o.tokens is not None else o.budget, MIN_TIME)


def paired_ratios(baseline: Sequence[Outcome], runs: Sequence[Outcome]) -> list[float]:
    """Per shared seed, baseline over optimizer tokens-to-target (censored = its budget)."""
    base = {o.record.seed: o for o in baseline}
    ratios = []
    for o in sorted(runs, key=lambda o: o.record.seed):
        b = base.get(o.record.seed)
        if b is None:
            continue
        ratio = _time_or_budget(b) / _time_or_budget(o)
        if math.isfinite(ratio) and ratio > 0:  # nan when a censored run's budget is unknown
            ratios.append(ratio)
    return ratios


def verdict(lo: float, hi: float, pairs: int) -> str:
    if pairs == 0:
        return "n/a"
    if pairs >= MIN_PAIRS_FOR_VERDICT and lo > 1:
        return "better"
    if pairs >= MIN_PAIRS_FOR_VERDICT and hi < 1:
        return "worse"
    return "tie"


def paired_speedup(baseline: Sequence[Outcome], runs: Sequence[Outcome]) -> Speedup:
    ratios = paired_ratios(baseline, runs)
    value, lo, hi = geomean_ci(ratios)
    return Speedup(value, lo, hi, len(ratios), verdict(lo, hi, len(ratios)))


def geometric_mean(values: Iterable[float]) -> float:
    x = [v for v in values if math.isfinite(v) and v > 0]
    return float(np.exp(np.mean(np.log(x)))) if x else math.nan


# ---- performance profile -----------------------------------------------------------------------


def profile_ratios(times: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """``times[task][optimizer]`` (nan or inf = not reached) -> ``ratios[optimizer][task]``.

    Every optimizer gets a ratio on every task: ``inf`` where it did not reach the target, did not
    run, or nobody reached the target.
    """
    optimizers = sorted({opt for per_task in times.values() for opt in per_task})
    ratios: dict[str, dict[str, float]] = {opt: {} for opt in optimizers}
    for task, per_task in times.items():
        finite = {o: max(t, MIN_TIME) for o, t in per_task.items() if math.isfinite(t)}
        best = min(finite.values(), default=math.inf)
        for opt in optimizers:
            ratios[opt][task] = finite[opt] / best if opt in finite else math.inf
    return ratios


def profile_curve(ratios: Mapping[str, float], taus: Sequence[float]) -> np.ndarray:
    """rho(tau): the fraction of tasks whose ratio is at most tau."""
    r = np.asarray(list(ratios.values()), dtype=float)
    if r.size == 0:
        return np.zeros(len(taus))
    return np.array([(r <= tau).mean() for tau in taus])


def profile_score(ratios: Mapping[str, float], tau_max: float = TAU_MAX) -> float:
    """Normalized area under rho over [1, tau_max]; exact, since rho is a step function.

    A task with ratio r <= tau_max adds ``(tau_max - r) / (tau_max - 1)`` over the task count.
    """
    if not ratios:
        return math.nan
    areas = [max(0.0, tau_max - max(r, 1.0)) for r in ratios.values()]
    return float(np.mean(areas) / (tau_max - 1.0))
