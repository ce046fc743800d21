"""Censoring-aware statistics over seeds: medians, intervals, sweeps, paired verdicts, profiles.

The rules, the same for every optimizer and task (the numerical methods and their proofs are in
``bench_cli.results.inference``):

- **Which runs.** Only ``role == "score"`` records enter medians, intervals and verdicts
  (``scored``); tuning and calibration runs never do. Records written before roles existed read
  as ``score``. Runs with status ``error`` crashed and are not results: they are left out of
  every statistic (but counted as trials, compute and errors).
- **Censoring.** A run that never reached the target is right-censored at the tokens it actually
  trained (``tokens_done``, never its planned budget): its time-to-target lies in
  ``[tokens_done, inf]``. A diverged run never reaches it: ``[inf, inf]``. The median over seeds
  is a value only when the bounds pin it down (more than half of the seeds reached the target,
  roughly); otherwise it is a lower bound, printed ``>x``.
- **Intervals** are distribution-free order-statistic intervals for the median, at their true
  coverage: the narrowest symmetric pair with coverage >= 95%, or ``[min, max]`` with the level it
  gives where the seeds cannot reach 95%. One seed: no interval.
- **Seed-independent tasks** (the task's outcome does not depend on the seed): the seeds count as
  one observation, the lowest seed's run; no interval and no verdict.
- **Best configuration** per (task, optimizer) among the scored runs: under the tune/score
  protocol there is one; for older folders that swept on the scored seeds, the configuration
  (hparams, plus the run settings that change training) with the best median over seeds of each
  run's best value of the target metric; a diverged run counts as the worst value. Ties go to the
  configuration with more seeds, then to the smaller canonical JSON key.
- **Speedup** over the baseline, paired by seed: per seed ``baseline / optimizer`` tokens-to-
  target, known to lie in an interval where a run is censored. The speedup is the geometric mean
  over pairs when every pair is a point, else its bounds (``speedup_lo``, ``speedup_hi``: the
  geometric means of the per-pair bounds; printed ``>x`` or ``<x``). The verdict is an exact
  paired sign-flip permutation test on the per-seed log speedups, two-sided at ``alpha`` (5%),
  evaluated at the worst case for each claim; with too few pairs for the level it says
  "too few seeds (N needed)".
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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from bench_cli.errors import BenchError
from bench_cli.results import inference
from bench_cli.results.inference import ALPHA
from bench_cli.results.metrics import to_target
from bench_cli.results.record import RunRecord, Target

TAU_MAX = 4.0  # AlgoPerf's upper limit of the profile
MIN_TIME = 1.0  # a run that meets the target at its first evaluation counts as one unit
#: run settings that change the training trajectory, hence part of a configuration
TRAINING_SETTINGS = ("steps", "warmup_steps", "schedule", "min_lr_ratio", "grad_clip")


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
    #: what tokens/seconds-to-target are known to be at least: the value when reached, what the
    #: run trained when it stopped short, inf when it diverged
    tokens_low: float
    seconds_low: float

    @property
    def tokens_high(self) -> float:
        return self.tokens_low if self.tokens is not None else math.inf

    @property
    def seconds_high(self) -> float:
        return self.seconds_low if self.seconds is not None else math.inf


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


def scored(records: Iterable[RunRecord]) -> list[RunRecord]:
    """The records that enter verdicts, intervals and medians: role ``score``."""
    return [r for r in records if r.role == "score"]


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
    tokens = None if hit is None else hit[0]
    seconds = None if hit is None else hit[1]
    never = r.status != "done"  # diverged (or crashed): it will not reach the target
    return Outcome(
        record=r,
        config=config_key(r),
        tokens=tokens,
        seconds=seconds,
        best=best,
        final=final,
        tokens_low=tokens if tokens is not None else math.inf if never else float(r.tokens_done),
        seconds_low=seconds
        if seconds is not None
        else math.inf
        if never
        else float(r.train_seconds),
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


def _differences(a: RunRecord, b: RunRecord) -> str:
    """What two runs of one seed and configuration differ in: task options, run settings."""
    out = []
    for what, x, y in (("task option", a.task_options, b.task_options),
                       ("setting", a.settings, b.settings)):  # fmt: skip
        for key in sorted(set(x) | set(y)):
            if x.get(key) != y.get(key):
                out.append(f"{what} {key} ({x.get(key)!r} and {y.get(key)!r})")
    return ", ".join(out) if out else "what their run ids hash (their task, say)"


def _one_per_seed(runs: Iterable[Outcome]) -> list[Outcome]:
    """The runs of one configuration, one per seed. Two different runs of one seed differ in what
    the task label does not show (data files of one name, say): taking either would be a guess."""
    by_seed: dict[int, Outcome] = {}
    for o in sorted(runs, key=lambda o: (o.record.seed, o.record.run_id)):
        first = by_seed.setdefault(o.record.seed, o)
        if first is not o:
            r = o.record
            raise BenchError(
                f"{r.task_key} {r.optimizer} seed {r.seed}: runs {first.record.run_id} and "
                f"{r.run_id} have one configuration but differ in "
                f"{_differences(first.record, r)}; keep them in separate folders, or give each "
                "task its own id"
            )
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


def kept_choices(
    records: Sequence[RunRecord], targets: Mapping[str, Target] | None = None
) -> tuple[dict[tuple[str, str], ConfigChoice], dict[str, Target]]:
    """Per (task, optimizer), the configuration that tables and figures show: the best among
    the scoring runs (tuning and calibration runs never stand for an optimizer), and the
    targets it was judged by."""
    runs = scored(records)
    targets = analysis_targets(runs, targets)
    return best_configs(outcomes(runs, targets), targets), targets


# ---- paired speedup ----------------------------------------------------------------------------


def one_observation(runs: Sequence[Outcome]) -> list[Outcome]:
    """A seed-independent task's runs count as one: the lowest seed's."""
    if runs and any(o.record.seed_independent for o in runs):
        return [min(runs, key=lambda o: (o.record.seed, o.record.run_id))]
    return list(runs)


@dataclass(frozen=True)
class Speedup:
    """Baseline over optimizer tokens-to-target, geometric mean over paired seeds.

    ``value`` when every pair is known exactly, else nan; ``lo``/``hi`` bound it (equal to
    ``value`` when known; ``hi`` inf or ``lo`` 0 where censoring leaves it open).
    """

    value: float
    lo: float
    hi: float
    pairs: int
    verdict: str  # better, worse, inconclusive, too few seeds (N needed), seed-independent, n/a
    p_better: float = math.nan
    p_worse: float = math.nan


def _floor(x: float) -> float:
    return max(x, MIN_TIME)


def paired_log_bounds(
    baseline: Sequence[Outcome], runs: Sequence[Outcome]
) -> list[tuple[float, float]]:
    """Per shared seed, the interval ``[L, U]`` that ``log(baseline / optimizer)`` lies in."""
    base = {o.record.seed: o for o in baseline}
    bounds = []
    for o in sorted(runs, key=lambda o: o.record.seed):
        b = base.get(o.record.seed)
        if b is None:
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            lo = np.log(_floor(b.tokens_low)) - np.log(_floor(o.tokens_high))
            hi = np.log(_floor(b.tokens_high)) - np.log(_floor(o.tokens_low))
        # inf - inf (both never reach): nothing is known
        bounds.append(
            (-math.inf if np.isnan(lo) else float(lo), math.inf if np.isnan(hi) else float(hi))
        )
    return bounds


def paired_ratios(baseline: Sequence[Outcome], runs: Sequence[Outcome]) -> list[float]:
    """Per shared seed where both reached the target, baseline over optimizer tokens."""
    return [math.exp(lo) for lo, hi in paired_log_bounds(baseline, runs) if lo == hi]


def paired_speedup(
    baseline: Sequence[Outcome], runs: Sequence[Outcome], alpha: float = ALPHA
) -> Speedup:
    independent = any(o.record.seed_independent for o in [*baseline, *runs])
    if independent:
        baseline, runs = one_observation(baseline), one_observation(runs)
        if baseline and runs:  # one observation each, whatever their seeds
            runs = [replace(runs[0], record=runs[0].record.model_copy(
                update={"seed": baseline[0].record.seed}))]  # fmt: skip
    bounds = paired_log_bounds(baseline, runs)
    if not bounds:
        return Speedup(math.nan, math.nan, math.nan, 0, "n/a")
    lows = [lo for lo, _ in bounds]
    highs = [hi for _, hi in bounds]
    with np.errstate(invalid="ignore"):  # inf and -inf among the pairs: the mean is undefined
        lo, hi = math.exp(float(np.mean(lows))), math.exp(float(np.mean(highs)))
    value = lo if lo == hi else math.nan
    if independent:
        return Speedup(value, lo, hi, len(bounds), "seed-independent")
    v = inference.paired_verdict(lows, highs, alpha)
    return Speedup(value, lo, hi, len(bounds), v.verdict, v.p_better, v.p_worse)


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
