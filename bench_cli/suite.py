"""YAML suites: every (task, optimizer, configuration, seed) cell, run into one directory.

The suite file's format (tasks, optimizers, sweeps, tiers) is described and validated in
``bench_cli.config``; this module plans its cells, calibrates targets and runs them.

Calibration (``target: calibrate``): the baseline's cells of that task run first, every
configuration and seed. Each configuration scores the median over seeds of its best value of the
task's target metric (a diverged or failed run scores the worst); the best score, relaxed by
``margin`` (``v + margin*|v|`` for a metric to minimise, ``v - margin*|v|`` to maximise), is the
target of every cell of the task. It is stored in ``DIR/calibration.json`` (and reused from there
on resume). The baseline's records are rescored against it from their curves, not rerun, and
rewritten atomically (their ``settings`` still say how they ran); the other cells run with it as
their ``target`` setting, so it is part of their run id.

A suite directory holds one record per cell (``<run_id>.json``), ``suite.resolved.yaml`` (the
suite with the tier applied; a directory holding another suite is refused), ``environment.json``,
``calibration.json`` and ``.running/<run_id>``, a marker for each run in progress. Rerunning skips
every cell whose record exists and reads back (a diverged or failed run is a record too); records
are written atomically, so a run killed at any point leaves no record and runs again.
``resume=False`` (``--no-resume``) refuses a directory that already holds records.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import socket
import statistics
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import ValidationError

from bench_cli import api
from bench_cli.config import (  # the suite schema, also importable from here as before
    Budget,  # noqa: F401
    OptimizerEntry,
    SuiteFile,
    TaskEntry,
    Tier,  # noqa: F401
    apply_tier,
    expand_grid,
    key_path,
    load_suite,
    parse_suite,  # noqa: F401
    read_yaml,
    schema_message,
)
from bench_cli.errors import BenchError, ConfigError
from bench_cli.plugins import normalize
from bench_cli.registry import OPTIMIZERS, optimizer_defaults
from bench_cli.results.metrics import to_target
from bench_cli.results.record import RunRecord, Target
from bench_cli.results.store import (
    atomic_write_text,
    ensure_writable_dir,
    read_record,
    record_path,
    write_record,
)
from bench_cli.runner import RunCallback, RunSpec, environment, resolve_device
from bench_cli.runner import run as run_loop

RESOLVED, ENVIRONMENT, CALIBRATION, MARKERS = (
    "suite.resolved.yaml",
    "environment.json",
    "calibration.json",
    ".running",
)
#: what ``suite status`` reports for a cell
STATES = ("done", "diverged", "failed", "running", "interrupted", "missing")


# -- planning -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One run of a suite: a task, one configuration of an optimizer, a seed."""

    task_id: str
    entry: int  # index into the suite's ``optimizers``
    optimizer: str
    config: dict[str, Any]  # the swept values of this grid point
    seed: int
    request: api.RunRequest
    baseline: bool  # the optimizer that targets are calibrated from
    calibrate: bool  # the task's target is calibrated
    spec: RunSpec | None  # None while the calibrated target is unknown

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.items()) or "-"

    @property
    def awaits_target(self) -> bool:
        return self.calibrate and not self.baseline


def _at(where: str, fn, *args):
    """Call ``fn``; a domain error is re-raised with the suite key path it concerns."""
    try:
        return fn(*args)
    except BenchError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _optimizer_name(name: str) -> str:
    return normalize(OPTIMIZERS.get(name).registry_name)


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


def _task_request(suite: SuiteFile, t: TaskEntry, optimizer: str) -> api.RunRequest:
    b = t.budget
    budget = {"steps": b.steps, "max_seconds": b.max_seconds, "eval_interval": b.eval_interval}
    settings = {**t.settings, **{k: v for k, v in budget.items() if v is not None}}
    if isinstance(t.target, float):
        settings["target"] = t.target
    return api.RunRequest(
        task=t.name,
        task_id=t.key,
        optimizers=[optimizer],
        task_options=dict(t.options),
        settings=settings,
        device=suite.device,
        plugins=list(suite.plugins),
    )


def _task_cells(
    suite: SuiteFile, i: int, names: list[str], baseline: str, seen: dict[str, str]
) -> list[Cell]:
    """The cells of ``suite.tasks[i]``, each validated by ``api.plan_runs``; ``seen`` maps the
    run ids planned so far to where they come from, so that no two cells share a record."""
    t = suite.tasks[i]
    base = _task_request(suite, t, names[0])
    task, _ = _at(f"tasks[{i}] ({t.name})", api.plan_runs, base)
    if t.target is not None and task.default_target() is None:
        raise ConfigError(f"tasks[{i}].target: task {t.name!r} states no target metric")
    cells = []
    for j, (entry, name) in enumerate(zip(suite.optimizers, names)):
        for point, seed in itertools.product(expand_grid({}, entry.sweep), suite.seeds):
            req = replace(base, optimizers=[name], seed=seed, hparams={**entry.hparams, **point})
            cal = t.target == "calibrate"
            cell = Cell(t.key, j, name, point, seed, req, name == baseline, cal, None)
            where = f"optimizers[{j}] ({name} {cell.label}) on tasks[{i}] ({t.key}), seed {seed}"
            _, [spec] = _at(where, api.plan_runs, req)
            # a cell that waits for its target gets its run id later; same plan, same run
            key = f"{t.key}/{spec.run_id}" if cell.awaits_target else spec.run_id
            if key in seen:
                raise ConfigError(f"{where} is the same run as {seen[key]}; remove one")
            seen[key] = where
            cells.append(cell if cell.awaits_target else replace(cell, spec=spec))
    return cells


def plan_suite(suite: SuiteFile, tier: str | None = None) -> list[Cell]:
    """Validate every cell through ``api.plan_runs`` (nothing runs); errors name the key path."""
    _, suite = apply_tier(suite, tier)
    _at("plugins", api.load_plugins, suite.plugins)
    names = [
        _at(f"optimizers[{j}].name", _optimizer_name, o.name)
        for j, o in enumerate(suite.optimizers)
    ]
    baseline = _at("baseline", _optimizer_name, suite.baseline)
    if any(t.target == "calibrate" for t in suite.tasks) and baseline not in names:
        raise ConfigError(f"baseline: {baseline!r} is not among the optimizers; calibrate needs it")
    for j, (entry, name) in enumerate(zip(suite.optimizers, names)):
        _check_hparams(entry, name, f"optimizers[{j}]")
    seen: dict[str, str] = {}
    return [
        c for i in range(len(suite.tasks)) for c in _task_cells(suite, i, names, baseline, seen)
    ]


def validate_suite(path: str | Path) -> dict[str | None, int]:
    """Load and plan a suite file under each of its tiers: {tier name: number of runs}."""
    suite = load_suite(path)
    tiers: list[str | None] = list(suite.tiers) if suite.tiers else [None]
    if suite.tiers and suite.default_tier is None:
        tiers.insert(0, None)  # without --tier, the suite runs as written
    return {name: len(_at(str(path), plan_suite, suite, name)) for name in tiers}


# -- calibration --------------------------------------------------------------------------------


def calibrated_target(
    target: Target, runs: dict[str, list[RunRecord]], margin: float = 0.0
) -> dict[str, Any]:
    """The calibration rule, on the baseline's records grouped by configuration (all seeds).

    A configuration's score is the median over seeds of its best value of ``target.metric``
    (a run that diverged, failed or lacks the metric scores the worst); the best score, relaxed by
    ``margin`` relative to its size, is the target.
    """
    lower = target.direction == "min"
    worst = math.inf if lower else -math.inf

    def best(r: RunRecord) -> float:
        value = r.best_metrics.get(target.metric) if r.status == "done" else None
        return worst if value is None else value

    scores = {label: statistics.median([best(r) for r in recs]) for label, recs in runs.items()}
    pick = (min if lower else max)(scores, key=lambda k: scores[k])
    value = scores[pick]
    if not math.isfinite(value):
        raise BenchError(
            f"cannot calibrate a target for {target.metric}: no configuration of the baseline "
            "finished on most of its seeds (the others diverged or failed); widen its sweep"
        )
    return {
        "metric": target.metric,
        "direction": target.direction,
        "margin": margin,
        "baseline_value": value,
        "value": value + margin * abs(value) if lower else value - margin * abs(value),
        "best_config": pick,
        "scores": {k: v if math.isfinite(v) else None for k, v in scores.items()},
    }


def _rescore(record: RunRecord, target: Target, out: Path) -> RunRecord:
    """The record measured against ``target`` from its curve, rewritten atomically if changed."""
    if record.target == target:
        return record
    reached = to_target(record.curve, target) if record.status != "error" else None
    record = record.model_copy(
        update={
            "target": target,
            "tokens_to_target": reached[0] if reached else None,
            "seconds_to_target": reached[1] if reached else None,
            "steps_to_target": reached[2] if reached else None,
        }
    )
    write_record(record, out)
    return record


def _with_target(cell: Cell, value: float) -> Cell:
    req = replace(cell.request, settings={**cell.request.settings, "target": value})
    _, [spec] = api.plan_runs(req)
    return replace(cell, request=req, spec=spec)


# -- running ------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _complete(out: Path, run_id: str) -> RunRecord | None:
    """The cell's record if it exists and reads back whole, else None."""
    path = record_path(out, run_id)
    if not path.is_file():
        return None
    try:
        record = read_record(path)
    except BenchError:
        return None
    return record if record.run_id == run_id else None


class _Runner:
    """Runs cells into ``out``: skips finished ones, marks the one in progress, writes records
    atomically, and prepares each task's data once."""

    def __init__(self, out: Path, callback: RunCallback | None):
        self.out, self.callback = out, callback
        self.prepared: dict[str, tuple[Any, Any]] = {}
        self.ran = self.skipped = 0
        (out / MARKERS).mkdir(exist_ok=True)

    def __call__(self, cell: Cell) -> RunRecord:
        spec = cell.spec
        assert spec is not None, "a calibrated cell runs only once its target is known"
        marker = self.out / MARKERS / spec.run_id
        done = _complete(self.out, spec.run_id)
        if done is not None:
            marker.unlink(missing_ok=True)  # left by a kill between the record and its removal
            self.skipped += 1
            return done
        task, device = self._task(spec)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": _now()}
        atomic_write_text(marker, json.dumps(info))
        record = run_loop(spec, task, device, self.callback)
        write_record(record, self.out)
        marker.unlink(missing_ok=True)
        self.ran += 1
        return record

    def _task(self, spec: RunSpec) -> tuple[Any, Any]:
        key = json.dumps([spec.task, spec.task_options, spec.settings.device], sort_keys=True)
        if key not in self.prepared:
            task = api.make_task(spec.task, spec.task_options)
            device = resolve_device(spec.settings.device)
            task.prepare(device)  # data is loaded once per task, not once per run
            self.prepared[key] = (task, device)
        return self.prepared[key]


def _resolved_text(tier: str | None, suite: SuiteFile) -> str:
    data = {"tier": tier, **suite.model_dump(mode="json", exclude={"tiers", "default_tier"})}
    return yaml.safe_dump(data, sort_keys=False)


def _difference(old: Any, new: Any, path: tuple = ()) -> str:
    """The key path of the first difference between two parsed YAML documents."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            if old.get(key) != new.get(key):
                return _difference(old.get(key), new.get(key), (*path, key))
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            if a != b:
                return _difference(a, b, (*path, i))
    return key_path(path)


def _claim(out: Path, resolved: str) -> None:
    """Write ``DIR/suite.resolved.yaml``, or check that DIR already holds this very suite."""
    ensure_writable_dir(out)
    path = out / RESOLVED
    if path.is_file():
        old = read_yaml(path.read_text(encoding="utf-8"), str(path))
        new = read_yaml(resolved, RESOLVED)
        if old != new:
            raise BenchError(
                f"{out} holds another suite ({_difference(old, new)} differs from its "
                f"{RESOLVED}); choose another --out"
            )
        return
    if _records_in(out):
        raise BenchError(f"{out} holds run records that are not from a suite; choose another --out")
    atomic_write_text(path, resolved)


def _records_in(out: Path) -> list[Path]:
    return [p for p in out.glob("[!.]*.json") if p.name not in (ENVIRONMENT, CALIBRATION)]


def _write_environment(out: Path, suite: SuiteFile, tier: str | None, source: str) -> None:
    env = environment(resolve_device(suite.device or "auto")).model_dump()
    info = {"suite": source, "tier": tier, "started_at": _now(), "host": socket.gethostname()}
    info["cpu_count"] = os.cpu_count()
    atomic_write_text(out / ENVIRONMENT, json.dumps({**info, **env}, indent=1))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


@dataclass
class SuiteSummary:
    """What ``run_suite`` did: every cell with its record, how many ran now, the targets."""

    out: Path
    tier: str | None
    cells: list[Cell]
    records: list[RunRecord]
    ran: int
    skipped: int
    calibration: dict[str, dict[str, Any]]

    @property
    def failed(self) -> list[RunRecord]:
        return [r for r in self.records if r.status == "error"]

    @property
    def table(self) -> pd.DataFrame:
        states = {"done": "done", "diverged": "diverged", "error": "failed"}
        return _frame([(c, states[r.status]) for c, r in zip(self.cells, self.records)])


def default_out(path: str | Path, tier: str | None) -> Path:
    return Path("suite-runs") / "-".join(filter(None, [Path(path).stem, tier]))


def _run_task(
    run: _Runner, cells: list[Cell], calibration: dict, margin: float
) -> tuple[list[Cell], list[RunRecord]]:
    """One task's cells; with a calibrated target, the baseline's first, then the target."""
    first = [c for c in cells if not c.awaits_target]
    records = [run(c) for c in first]
    if not cells[0].calibrate:
        return cells, records
    key = cells[0].task_id
    if key not in calibration:
        runs: dict[str, list[RunRecord]] = {}
        for c, r in zip(first, records):
            runs.setdefault(f"optimizers[{c.entry}] {c.optimizer} {c.label}", []).append(r)
        calibration[key] = calibrated_target(first[0].spec.target, runs, margin)
        atomic_write_text(run.out / CALIBRATION, json.dumps(calibration, indent=1))
    cal = calibration[key]
    target = Target(metric=cal["metric"], value=cal["value"], direction=cal["direction"])
    records = [_rescore(r, target, run.out) for r in records]
    rest = [_with_target(c, cal["value"]) for c in cells if c.awaits_target]
    return first + rest, records + [run(c) for c in rest]


def run_suite(
    path: str | Path,
    tier: str | None = None,
    out: str | Path | None = None,
    resume: bool = True,
    callback: RunCallback | None = None,
) -> SuiteSummary:
    """Run every cell of the suite at ``path`` into ``out``, skipping the cells whose record is
    there already; with ``resume=False``, refuse a directory that holds records."""
    suite = load_suite(path)
    tier_name, resolved = _at(str(path), apply_tier, suite, tier)
    cells = _at(str(path), plan_suite, resolved)
    out = Path(out) if out is not None else default_out(path, tier_name)
    if not resume and out.is_dir() and _records_in(out):
        raise BenchError(
            f"{out} already holds {len(_records_in(out))} records; resume (the default) to "
            "finish the suite there, or choose another --out"
        )
    _claim(out, _resolved_text(tier_name, resolved))
    _write_environment(out, resolved, tier_name, str(path))
    run = _Runner(out, callback)
    calibration = _read_json(out / CALIBRATION)
    all_cells: list[Cell] = []
    records: list[RunRecord] = []
    for t in resolved.tasks:
        mine = [c for c in cells if c.task_id == t.key]
        done_cells, done = _run_task(run, mine, calibration, t.margin)
        all_cells += done_cells
        records += done
    return SuiteSummary(out, tier_name, all_cells, records, run.ran, run.skipped, calibration)


# -- status -------------------------------------------------------------------------------------


def _frame(rows: list[tuple[Cell, str]]) -> pd.DataFrame:
    columns = ["task", "optimizer", "config", "seed", "state", "run_id"]
    return pd.DataFrame(
        [
            (c.task_id, c.optimizer, c.label, c.seed, state, c.spec.run_id if c.spec else None)
            for c, state in rows
        ],
        columns=columns,
    )


def _alive(marker: Path) -> bool:
    """Whether the process that wrote ``marker`` still runs (another host's: assume it does)."""
    info = _read_json(marker)
    if info.get("host") != socket.gethostname():
        return bool(info)
    try:
        os.kill(int(info["pid"]), 0)
    except (ProcessLookupError, KeyError, ValueError):
        return False
    except PermissionError:
        return True
    return True


def _state(out: Path, cell: Cell) -> str:
    if cell.spec is None:
        return "missing"  # waits for the baseline's calibration
    record = _complete(out, cell.spec.run_id)
    if record is not None:
        return {"done": "done", "diverged": "diverged", "error": "failed"}[record.status]
    marker = out / MARKERS / cell.spec.run_id
    if marker.exists():
        return "running" if _alive(marker) else "interrupted"
    return "missing"


def suite_status(out: str | Path) -> pd.DataFrame:
    """One row per cell of the suite run into ``out``: task, optimizer, config, seed, state
    (one of ``STATES``) and run id (None while the cell waits for a calibrated target)."""
    out = Path(out)
    path = out / RESOLVED
    if not path.is_file():
        raise BenchError(f"{out} is not a suite directory (it has no {RESOLVED})")
    data = read_yaml(path.read_text(encoding="utf-8"), str(path))
    data.pop("tier", None)
    try:
        suite = SuiteFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {schema_message(exc)}") from exc
    calibration = _read_json(out / CALIBRATION)
    cells = [
        _with_target(c, calibration[c.task_id]["value"])
        if c.awaits_target and c.task_id in calibration
        else c
        for c in plan_suite(suite)
    ]
    return _frame([(c, _state(out, c)) for c in cells])


def status_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Per task and optimizer, how many cells are in each of ``STATES``."""
    counts = (
        table.groupby(["task", "optimizer"], sort=False)["state"]
        .value_counts()
        .unstack(fill_value=0)
        .reindex(columns=list(STATES), fill_value=0)
    )
    return counts.rename_axis(columns=None).reset_index()


def calibration_of(out: str | Path) -> dict[str, dict[str, Any]]:
    """The calibrated targets stored in a suite directory ({} when none)."""
    return _read_json(Path(out) / CALIBRATION)
