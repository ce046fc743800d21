"""A CI gate: compare a results directory against a baseline one and list what got worse.

A problem is one of:

- a task, or an optimizer on a task, that the baseline has and the new results lack;
- a seed that the baseline scored a task-optimizer pair on and the new results did not (extra
  seeds are fine; a seed-independent task's seeds count as one run, as on the leaderboard);
- tokens-to-target that got worse. Where both sides have seeds enough for a test at ``alpha``
  (three a side at 5%), a one-sided permutation test of the new runs against the baseline runs
  scaled by ``1 + tolerance`` (``inference.shift_p``; censored runs count as what they are known
  to be at least): the pair is slower when p <= alpha, so a pair whose runs did not change is
  called slower in at most alpha of checks (``tests/results/test_verdict_error_rates.py``).
  With fewer seeds (one, as in a deterministic CI smoke suite) the values are compared as they
  are: the new median exceeds the upper end of the baseline's interval (its own value, for one
  seed) by more than ``tolerance``, or it is censored where the baseline's was not. Each pair is
  judged on its own: under noise, P pairs give up to P x alpha false alarms between them;
- a run that crashed (``error``) where the baseline's did not, or diverged where the baseline's
  finished. Runs are matched by task, optimizer, seed and configuration; when each side tried one
  configuration only (no sweep), by task, optimizer and seed, so a changed default is still caught.

Both sides are measured against the baseline's targets, so a recalibrated target is no excuse.
A record file of either side that cannot be read fails the check (it may be the regression).
Numbers in a problem are printed with as many digits as it takes for the two compared to differ.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench_cli.errors import BenchError, DamagedRecordsError
from bench_cli.results import inference, leaderboard, stats
from bench_cli.results.defaults import DEFAULT_TOLERANCE
from bench_cli.results.record import RunRecord
from bench_cli.results.store import load_records


def _count(x: float, digits: int) -> str:
    """``digits`` significant digits with k/M/B/T: (1234567, 3) -> '1.23M'."""
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div * (1 - 5 * 10.0 ** -(digits + 1)):
            return f"{x / div:.{digits}g}{suffix}"
    return f"{x:.{digits}g}"


def fmt_counts(*values: float, differ: tuple[tuple[int, int], ...] = ((0, 1),)) -> list[str]:
    """``values`` with 3 significant digits, or as many more as it takes for each pair of indices
    in ``differ`` whose values differ to print differently."""
    for digits in range(3, 18):
        out = [_count(v, digits) for v in values]
        if all(out[i] != out[j] or values[i] == values[j] for i, j in differ):
            return out
    return [repr(v) for v in values]


def fmt_tolerance(tol: float) -> str:
    return f"{tol * 100:.6g}%"


def _missing(base: set, new: set) -> list[str]:
    problems = []
    base_tasks, new_tasks = {t for t, _ in base}, {t for t, _ in new}
    for task in sorted(base_tasks - new_tasks):
        problems.append(f"{task}: no runs in the new results")
    for task, opt in sorted(base - new):
        if task in new_tasks:
            problems.append(f"{task} / {opt}: no runs in the new results")
    return problems


def _seed_list(seeds: set[int]) -> str:
    """Sorted seeds with runs of three or more joined: {0, 1, 2, 3, 7} -> '0-3, 7'."""
    spans: list[list[int]] = []
    for s in sorted(seeds):
        if spans and s == spans[-1][1] + 1:
            spans[-1][1] = s
        else:
            spans.append([s, s])
    parts = []
    for lo, hi in spans:
        parts += [f"{lo}-{hi}"] if hi - lo >= 2 else [str(x) for x in range(lo, hi + 1)]
    return ", ".join(parts)


def _missing_seeds(base: Sequence[RunRecord], new: Sequence[RunRecord]) -> list[str]:
    """Per task-optimizer pair that both sides scored, the baseline's scored seeds that the new
    results lack (a pair without scored runs is ``_missing``'s)."""
    seeds: dict[str, dict[tuple[str, str], set[int]]] = {"base": {}, "new": {}}
    independent = set()
    for side, records in (("base", base), ("new", new)):
        for r in stats.scored(records):
            seeds[side].setdefault((r.task_key, r.optimizer), set()).add(r.seed)
            if r.seed_independent:
                independent.add((r.task_key, r.optimizer))
    problems = []
    for pair, base_seeds in sorted(seeds["base"].items()):
        if pair in independent or pair not in seeds["new"]:
            continue
        if lacking := base_seeds - seeds["new"][pair]:
            n = len(lacking)
            problems.append(
                f"{pair[0]} / {pair[1]}: no runs for seed{'s' * (n > 1)} {_seed_list(lacking)} "
                f"in the new results (the baseline has seed{'s' * (len(base_seeds) > 1)} "
                f"{_seed_list(base_seeds)}); "
                "run them, or check against a baseline with the same seeds"
            )
    return problems


def _runs(records: Sequence[RunRecord], targets) -> dict[tuple[str, str], list[stats.Outcome]]:
    """Per (task, optimizer), the runs its leaderboard row stands for, one per seed."""
    choices, _ = stats.kept_choices(records, targets)
    return {pair: stats.one_observation(c.runs) for pair, c in choices.items()}


def _tested(where, n, b, new_runs, base_runs, tol: float, alpha: float) -> str | None:
    """The problem when the permutation test finds the new runs slower than the baseline's
    beyond the tolerance at level ``alpha``, else None."""
    p = inference.shift_p(
        [o.tokens_low for o in new_runs], [o.tokens_high for o in new_runs],
        [o.tokens_low for o in base_runs], [o.tokens_high for o in base_runs],
        factor=1 + tol,
    )  # fmt: skip
    if p > alpha:
        return None
    new = n.tokens_to_target if not math.isnan(n.tokens_to_target) else n.tokens_to_target_low
    old = b.tokens_to_target if not math.isnan(b.tokens_to_target) else b.tokens_to_target_low
    new_s, old_s, lo, hi = fmt_counts(
        new, old, b.tokens_to_target_lo, b.tokens_to_target_hi, differ=((0, 1), (0, 3))
    )
    new_s = new_s if not math.isnan(n.tokens_to_target) else f">{new_s}"
    old_s = old_s if not math.isnan(b.tokens_to_target) else f">{old_s}"
    return (
        f"{where}: slower than the baseline beyond the {fmt_tolerance(tol)} tolerance: median "
        f"{n.unit}-to-target {new_s} against {old_s} [{lo}, {hi}], reached the target in "
        f"{n.reached}/{n.runs} seeds (baseline {b.reached}/{b.runs}); one-sided permutation "
        f"test of the {len(new_runs)} new against the {len(base_runs)} baseline runs, "
        f"p = {p:.2g} <= {alpha:g}"
    )


def _regressions(
    base: leaderboard.Leaderboard,
    new: leaderboard.Leaderboard,
    runs: dict[str, dict[tuple[str, str], list[stats.Outcome]]],
    tol: float,
    alpha: float,
):
    """Tokens-to-target that got worse: tested where both sides have seeds enough for the
    permutation test to reach ``alpha``; else (one or two seeds, as in a deterministic CI
    smoke suite) the medians compared as they are."""
    problems = []
    old_rows = {(r.task, r.optimizer): r for r in base.tasks.itertuples()}
    for n in new.tasks.itertuples():
        b = old_rows.get((n.task, n.optimizer))
        if b is None:
            continue
        where = f"{n.task} / {n.optimizer}"
        new_runs = runs["new"].get((n.task, n.optimizer), [])
        base_runs = runs["base"].get((n.task, n.optimizer), [])
        if new_runs and base_runs and inference.min_shift_p(len(new_runs), len(base_runs)) <= alpha:
            if problem := _tested(where, n, b, new_runs, base_runs, tol, alpha):
                problems.append(problem)
            continue
        if math.isnan(b.tokens_to_target):
            continue
        few = (
            f" ({len(new_runs)} and {len(base_runs)} seeds are too few for a test at "
            f"{alpha:g}: the values were compared as they are)"
        )
        if math.isnan(n.tokens_to_target):
            problems.append(
                f"{where}: reached the target in {n.reached}/{n.runs} seeds (baseline "
                f"{b.reached}/{b.runs}); the median {n.unit}-to-target is now censored{few}"
            )
        elif n.tokens_to_target > (limit := b.tokens_to_target_hi * (1 + tol)):
            new_s, lo, hi, lim = fmt_counts(
                n.tokens_to_target,
                b.tokens_to_target_lo,
                b.tokens_to_target_hi,
                limit,
                differ=((0, 2), (0, 3)),
            )
            at_most = f"; at most {lim} passes" if tol else ""
            problems.append(
                f"{where}: median {n.unit}-to-target {new_s} is above the baseline's interval "
                f"[{lo}, {hi}] by more than the {fmt_tolerance(tol)} tolerance{at_most}{few}"
            )
    return problems


def _configs(records: Sequence[RunRecord]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in records:
        out[(r.task_key, r.optimizer)].add(stats.config_key(r))
    return out


def _status_lookup(base: Sequence[RunRecord], new: Sequence[RunRecord]):
    """For a new run, the status of the matching baseline run (None when there is none)."""
    exact = {(r.task_key, r.optimizer, r.seed, stats.config_key(r)): r.status for r in base}
    by_seed = {(r.task_key, r.optimizer, r.seed): r.status for r in base}
    base_configs, new_configs = _configs(base), _configs(new)

    def previous(r: RunRecord) -> str | None:
        key = (r.task_key, r.optimizer, r.seed, stats.config_key(r))
        if key in exact:
            return exact[key]
        pair = (r.task_key, r.optimizer)
        if len(base_configs.get(pair, ())) == 1 and len(new_configs[pair]) == 1:
            return by_seed.get((r.task_key, r.optimizer, r.seed))  # no sweep: a changed default
        return None

    return previous


def _new_failures(base: Sequence[RunRecord], new: Sequence[RunRecord]) -> list[str]:
    previous = _status_lookup(base, new)
    problems = []
    for r in new:
        before = previous(r)
        if (r.status == "error" and before != "error") or (
            r.status == "diverged" and before == "done"
        ):
            why = f": {r.error.splitlines()[0]}" if r.error else ""
            was = f"was {before}" if before else "not in the baseline"
            problems.append(f"{r.task_key} / {r.optimizer} seed {r.seed}: {r.status}{why} ({was})")
    return problems


def _check_tolerance(tolerance: float) -> None:
    """A finite fraction in [0, 1]: 5 is more likely a 5% meant than a 500% slack."""
    if not 0 <= tolerance <= 1:
        raise BenchError(
            f"tolerance must lie between 0 and 1 (a fraction, 0.05 = 5%), got {tolerance}"
        )


def compare(
    new: Sequence[RunRecord],
    base: Sequence[RunRecord],
    tolerance: float = DEFAULT_TOLERANCE,
    baseline: str = leaderboard.DEFAULT_BASELINE,
    alpha: float = inference.ALPHA,
) -> list[str]:
    """Human-readable problems of ``new`` against ``base``; an empty list means it passes."""
    _check_tolerance(tolerance)
    base_lb = leaderboard.build(base, baseline, alpha=alpha)
    new_lb = leaderboard.build(new, baseline, targets=base_lb.targets, alpha=alpha)
    runs = {"base": _runs(base, base_lb.targets), "new": _runs(new, base_lb.targets)}
    keys = {
        side: set(zip(lb.tasks["task"], lb.tasks["optimizer"]))
        for side, lb in (("base", base_lb), ("new", new_lb))
    }
    return [
        *_missing(keys["base"], keys["new"]),
        *_missing_seeds(base, new),
        *_regressions(base_lb, new_lb, runs, tolerance, alpha),
        *_new_failures(base, new),
    ]


@dataclass(frozen=True)
class Report:
    """The problems found (none: the check passes) and what was compared, in words."""

    problems: list[str]
    compared: str


def _load(directory: Path, warn: Callable[[str], None] | None) -> list[RunRecord]:
    try:
        records = load_records(directory, warn=warn)
    except DamagedRecordsError as exc:
        n = len(exc.details)
        raise DamagedRecordsError(
            f"cannot check: {n} file{'s' * (n > 1)} in {str(directory)!r} cannot be read as run "
            "records, and any of them may hold a regression; repair or remove them",
            list(exc.details),
        ) from None
    if not records:
        raise BenchError(f"no run records in {str(directory)!r}")
    return records


def check_dirs(
    new_dir: Path,
    base_dir: Path,
    tolerance: float = DEFAULT_TOLERANCE,
    warn: Callable[[str], None] | None = None,
    alpha: float = inference.ALPHA,
) -> Report:
    """``compare`` on the records stored in two directories; ``warn`` hears of each second copy
    of a record that was left out."""
    _check_tolerance(tolerance)  # before reading the folders
    new, base = _load(new_dir, warn), _load(base_dir, warn)
    problems = compare(new, base, tolerance, alpha=alpha)
    tasks = {r.task_key for r in base}
    pairs = {(r.task_key, r.optimizer) for r in base}
    optimizers = {o for _, o in pairs}
    compared = (
        f"compared {len(tasks)} task{'s' * (len(tasks) != 1)} and {len(optimizers)} "
        f"optimizer{'s' * (len(optimizers) != 1)} ({len(pairs)} task-optimizer pairs, "
        f"{len(new)} runs against {len(base)} baseline runs), tolerance {fmt_tolerance(tolerance)}"
        f", pairs with seeds enough tested at {alpha:g}"
    )
    return Report(problems, compared)
