"""Planning: a suite becomes cells (one resolved run each), grouped in phases.

The protocol (``bench_cli.protocol`` runs it; README "How bench decides"):

1. **Tune.** Every configuration of every optimizer that has more than one runs on the tuning
   seeds (``tuning.seeds``; default one seed above the scoring seeds). Skipped when no optimizer
   sweeps.
2. **Calibrate** (tasks with ``target: calibrate``). The baseline's configuration with the best
   median metric in tuning (its only one if it does not sweep) runs on the calibration seeds
   (``tuning.calibration_seeds``; default as many as the scoring seeds, above the tuning seeds).
   The target is the median of their best values, relaxed by ``margin``. Never scored.
3. **Select.** Each optimizer keeps the configuration with the smallest censored median time to
   the target on the tuning seeds (``bench_cli.results.selection``).
4. **Score.** The selected configurations run on the scoring seeds (``seeds``). Only these enter
   the verdicts.

Tuning, calibration and scoring seeds must be disjoint. A task whose outcome does not depend on
the seed runs one seed per phase. Suites whose optimizers have different numbers of
configurations are refused unless ``tuning: {budget: unequal}``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from typing import Any

from bench_cli import api
from bench_cli.config import OptimizerEntry, SuiteFile, TaskEntry, apply_tier, expand_grid
from bench_cli.datafiles import DATA_OPTIONS, missing
from bench_cli.errors import BenchError, ConfigError
from bench_cli.plugins import normalize
from bench_cli.registry import OPTIMIZERS, optimizer_defaults
from bench_cli.results.record import Target
from bench_cli.spec import RunSpec

PHASES = ("tune", "calibrate", "score")


@dataclass(frozen=True)
class Cell:
    """One run of a suite: its resolved spec, and which optimizer entry it comes from."""

    spec: RunSpec
    entry: int
    plugins: tuple[str, ...] = ()

    @property
    def run_id(self) -> str:
        return self.spec.run_id

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.spec.config.items()) or "-"


@dataclass(frozen=True)
class TaskPlan:
    """A suite task, validated: its request template, id, target and seeds per phase."""

    index: int
    entry: TaskEntry
    task_id: str
    request: api.RunRequest
    target: Target | None
    seed_independent: bool

    @property
    def calibrate(self) -> bool:
        return self.entry.target == "calibrate"


@dataclass(frozen=True)
class Plan:
    suite: SuiteFile  # the tier applied
    tier: str | None
    names: list[str]  # optimizer registry names, one per entry
    baseline: str
    tasks: list[TaskPlan]
    seeds: dict[str, list[int]]  # phase -> seeds

    def grid(self, j: int) -> list[dict[str, Any]]:
        return expand_grid({}, self.suite.optimizers[j].sweep)

    @property
    def tunes(self) -> bool:
        return any(len(self.grid(j)) > 1 for j in range(len(self.names)))

    def seeds_for(self, phase: str, tp: TaskPlan) -> list[int]:
        seeds = self.seeds[phase]
        return seeds[:1] if tp.seed_independent else seeds

    def cell(
        self, tp: TaskPlan, j: int, config: dict, seed: int, role: str, target: float | None
    ) -> Cell:
        entry = self.suite.optimizers[j]
        settings = dict(tp.request.settings)
        if target is not None:
            settings["target"] = target
        req = replace(
            tp.request,
            optimizers=[self.names[j]],
            seed=seed,
            hparams={**entry.hparams, **config},
            settings=settings,
            role=role,
            config=config,
        )
        label = " ".join([self.names[j], *([str(config)] if config else [])])
        where = f"optimizers[{j}] ({label}) on tasks[{tp.index}] "
        _, [spec] = at_path(f"{where}({tp.task_id}), seed {seed}", api.plan_runs, req)
        return Cell(spec, j, tuple(self.suite.plugins))

    # -- the phases -----------------------------------------------------------------------------

    def tune_cells(self) -> list[Cell]:
        """Every configuration of every optimizer that has several, on the tuning seeds."""
        cells = []
        for tp in self.tasks:
            fixed = None if tp.calibrate else (tp.target.value if tp.target else None)
            for j in range(len(self.names)):
                grid = self.grid(j)
                if len(grid) < 2:
                    continue
                for config, seed in itertools.product(grid, self.seeds_for("tune", tp)):
                    cells.append(self.cell(tp, j, config, seed, "tune", fixed))
        return _unique(cells)

    def calibrate_cells(self, chosen: dict[str, dict]) -> list[Cell]:
        """The baseline's chosen configuration (``chosen[task_id]``) on the calibration seeds."""
        if not any(tp.calibrate for tp in self.tasks):
            return []  # and the baseline need not be among the optimizers
        j = self.names.index(self.baseline)
        return [
            self.cell(tp, j, chosen.get(tp.task_id, self.grid(j)[0]), seed, "calibrate", None)
            for tp in self.tasks
            if tp.calibrate
            for seed in self.seeds_for("calibrate", tp)
        ]

    def score_cells(
        self, selected: dict[tuple[str, str], dict], targets: dict[str, float]
    ) -> list[Cell]:
        """Each optimizer's selected configuration on the scoring seeds; a calibrated task's
        cells wait for its target (``targets[task_id]``)."""
        cells = []
        for tp in self.tasks:
            if tp.calibrate and tp.task_id not in targets:
                continue
            value = targets.get(tp.task_id) if tp.calibrate else None
            for j, name in enumerate(self.names):
                config = selected.get((tp.task_id, name), self.grid(j)[0])
                for seed in self.seeds_for("score", tp):
                    cells.append(self.cell(tp, j, config, seed, "score", value))
        return _unique(cells)

    def phase_sizes(self) -> dict[str, int]:
        """How many cells each phase has (known before anything runs)."""
        grids = sum(n for n in (len(self.grid(j)) for j in range(len(self.names))) if n > 1)
        tune = sum(len(self.seeds_for("tune", tp)) * grids for tp in self.tasks)
        cal = sum(len(self.seeds_for("calibrate", tp)) for tp in self.tasks if tp.calibrate)
        score = sum(len(self.seeds_for("score", tp)) * len(self.names) for tp in self.tasks)
        return {"tune": tune, "calibrate": cal, "score": score}


def at_path(where: str, fn, *args):
    """Call ``fn``; a domain error is re-raised with the suite key path it concerns."""
    try:
        return fn(*args)
    except BenchError as exc:
        raise located(where, str(exc), getattr(exc, "unlocated", None) or str(exc)) from exc


def located(where: str, message: str, unlocated: str | None = None) -> ConfigError:
    """An error at a suite key path; ``unlocated`` is the message without it (by default the
    same), for ``bench run``, whose one-task suite the user never wrote."""
    error = ConfigError(f"{where}: {message}")
    error.unlocated = unlocated or message
    return error


def _unique(cells: list[Cell]) -> list[Cell]:
    seen: dict[str, Cell] = {}
    for c in cells:
        first = seen.setdefault(c.run_id, c)
        if first is c:
            continue
        if first.entry == c.entry:
            raise ConfigError(
                f"optimizers[{c.entry}].sweep: {first.label} and {c.label} are the same run of "
                f"{c.spec.optimizer} (a value given twice, say); remove one"
            )
        what = " ".join([c.spec.optimizer, *([c.label] if c.spec.config else [])])
        raise ConfigError(
            f"optimizers[{first.entry}] and optimizers[{c.entry}] ({what}) on {c.spec.task_id}, "
            f"seed {c.spec.seed} are the same run; remove one"
        )
    return cells


def _check_hparams(entry: OptimizerEntry, name: str, where: str) -> None:
    accepted = optimizer_defaults(OPTIMIZERS.get(name))
    for part, values in (("hparams", entry.hparams), ("sweep", entry.sweep)):
        for key in values:
            if key not in accepted:
                raise ConfigError(
                    f"{where}.{part}.{key}: optimizer {name!r} has no hyperparameter {key!r}; "
                    f"it accepts {', '.join(accepted)}"
                )
    # the two ways to misread a list: a sweep written as a value, a value written as a sweep
    for key, value in entry.hparams.items():
        default = accepted[key]
        if isinstance(value, list) and default is not None and not isinstance(default, tuple):
            raise ConfigError(
                f"{where}.hparams.{key}: a list in hparams is one value, and {key} takes a "
                f"number; to sweep it, write it under sweep: {{{key}: {value}}}"
            )
    for key, values in entry.sweep.items():
        if isinstance(accepted[key], tuple) and not all(isinstance(v, list) for v in values):
            raise ConfigError(
                f"{where}.sweep.{key}: each value of {key} is a list, so a sweep over it is a "
                f"list of lists, e.g. {[list(accepted[key])]}; a fixed value goes under hparams"
            )


def _task_request(suite: SuiteFile, t: TaskEntry) -> api.RunRequest:
    b = t.budget
    budget = {"steps": b.steps, "max_seconds": b.max_seconds, "eval_interval": b.eval_interval}
    settings = {**t.settings, **{k: v for k, v in budget.items() if v is not None}}
    if isinstance(t.target, float):
        settings["target"] = t.target
    return api.RunRequest(
        task=t.name,
        task_id=t.id,
        optimizers=[],
        task_options=dict(t.options),
        settings=settings,
        device=suite.device,
        plugins=list(suite.plugins),
    )


def phase_seeds(suite: SuiteFile) -> dict[str, list[int]]:
    """Scoring, tuning and calibration seeds; refused unless disjoint."""
    score = list(suite.seeds)
    tune = list(suite.tuning.seeds or [max(score) + 1])
    top = max(score + tune)
    cal = list(suite.tuning.calibration_seeds or range(top + 1, top + 1 + len(score)))
    pairs = (
        ("tuning.seeds", tune, "seeds", score),
        ("tuning.calibration_seeds", cal, "seeds", score),
        ("tuning.calibration_seeds", cal, "tuning.seeds", tune),
    )
    for name, seeds, other, others in pairs:
        shared = sorted(set(seeds) & set(others))
        if shared:
            raise ConfigError(
                f"{name} and {other} share seed {shared[0]}: scoring seeds must be fresh; "
                f"choose disjoint seeds"
            )
    return {"score": score, "tune": tune, "calibrate": cal}


def count_cells(suite: SuiteFile, tier: str | None = None) -> dict[str, int]:
    """How many cells each phase has at most, counted without resolving any (so a huge grid is
    refused at once); a seed-independent task counts all its seeds here."""
    _, suite = apply_tier(suite, tier)
    seeds = at_path("tuning", phase_seeds, suite)
    grids = [math.prod(len(v) for v in o.sweep.values()) for o in suite.optimizers]
    n_tasks = len(suite.tasks)
    calibrated = sum(t.target == "calibrate" for t in suite.tasks)
    return {
        "tune": n_tasks * len(seeds["tune"]) * sum(g for g in grids if g > 1),
        "calibrate": calibrated * len(seeds["calibrate"]),
        "score": n_tasks * len(seeds["score"]) * len(grids),
    }


def build_plan(suite: SuiteFile, tier: str | None = None) -> Plan:
    """Validate a suite (every cell it can have goes through ``api.plan_runs``; nothing runs)."""
    tier, suite = apply_tier(suite, tier)
    at_path("plugins", api.load_plugins, suite.plugins)
    names = [
        at_path(
            f"optimizers[{j}].name", lambda n: normalize(OPTIMIZERS.get(n).registry_name), o.name
        )
        for j, o in enumerate(suite.optimizers)
    ]
    baseline = at_path(
        "baseline", lambda n: normalize(OPTIMIZERS.get(n).registry_name), suite.baseline
    )
    if any(t.target == "calibrate" for t in suite.tasks) and baseline not in names:
        raise ConfigError(f"baseline: {baseline!r} is not among the optimizers; calibrate needs it")
    if "baseline" in suite.model_fields_set and baseline not in names:  # the leaderboard's too
        raise ConfigError(
            f"baseline: {baseline!r} is not among the optimizers ({', '.join(names)}); name one "
            "of them, or add it"
        )
    for j, (entry, name) in enumerate(zip(suite.optimizers, names)):
        _check_hparams(entry, name, f"optimizers[{j}]")
    sizes = {name: len(expand_grid({}, e.sweep)) for e, name in zip(suite.optimizers, names)}
    if len(set(sizes.values())) > 1 and suite.tuning.budget == "equal":
        raise ConfigError(
            "optimizers have different numbers of configurations ("
            + ", ".join(f"{n} {k}" for n, k in sizes.items())
            + "): a larger sweep is an advantage; give each the same number, or set "
            "tuning: {budget: unequal} and the tables will mark it"
        )
    seeds = at_path("tuning", phase_seeds, suite)
    tasks, ids = [], {}
    for i, t in enumerate(suite.tasks):
        for key in DATA_OPTIONS:
            problem = missing(t.options.get(key))
            if problem:
                where, fix = f"tasks[{i}].options.{key}", f"{problem}; fix the path"
                raise located(where, fix, f"{key} {fix}")
        req = _task_request(suite, t)
        task, [spec] = at_path(
            f"tasks[{i}] ({t.name})", api.plan_runs, replace(req, optimizers=[names[0]])
        )
        if t.target is not None and task.default_target() is None:
            raise located(f"tasks[{i}].target", f"task {t.name!r} states no target metric")
        if spec.task_id in ids:
            raise ConfigError(
                f"tasks[{i}] is the same task variant as tasks[{ids[spec.task_id]}] "
                f"({spec.task_id}); give one of them an id"
            )
        ids[spec.task_id] = i
        tasks.append(TaskPlan(i, t, spec.task_id, req, spec.target, task.seed_independent))
    plan = Plan(suite, tier, names, baseline, tasks, seeds)
    # every configuration on every task must resolve now, and be unique, not after hours of tuning
    _unique([
        plan.cell(tp, j, config, seeds["score"][0], "score", None)
        for tp in tasks for j in range(len(names)) for config in plan.grid(j)
    ])  # fmt: skip
    return plan
