"""Running a suite's phases (``bench_cli.plan`` says what they are), and a folder's status.

Each phase's cells go to the executor together, and the next phase is planned from the records
of the last: tune, calibrate (the target), select (each optimizer's configuration), score.
Calibrated targets are stored in ``calibration.json`` and selections in ``selection.json``; both
are recomputed from the records on every run, so a resumed suite plans exactly the same cells.
Tuning records of a task whose target was calibrated are rescored against it from their curves
(rewritten atomically), never rerun.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from bench_cli.config import ExecutorSettings, SuiteFile
from bench_cli.errors import BenchError
from bench_cli.executors import Executors, execute
from bench_cli.folder import CALIBRATION, RESOLVED, RUNS, SELECTION, Folder, read_suite_file
from bench_cli.plan import Cell, Plan, build_plan
from bench_cli.results.metrics import to_target
from bench_cli.results.record import RunRecord, Target
from bench_cli.results.selection import calibrated_value, select_from

#: what ``suite status`` reports for a cell
STATES = ("done", "diverged", "failed", "running", "interrupted", "missing")
_STATE = {"done": "done", "diverged": "diverged", "error": "failed"}


def resolved_text(plan: Plan) -> str:
    """The suite as it runs: tier applied; how it is executed and logged left out, so that a
    suite can resume on another executor."""
    data = {
        "tier": plan.tier,
        **plan.suite.model_dump(mode="json", exclude={"tiers", "default_tier", "executor", "log"}),
    }
    return yaml.safe_dump(data, sort_keys=False)


@dataclass
class SuiteSummary:
    """What a suite run did: every cell with its record, how many ran now, the decisions."""

    out: Path
    tier: str | None
    cells: list[Cell]
    records: list[RunRecord]
    ran: int
    calibration: dict[str, dict[str, Any]] = field(default_factory=dict)
    selection: dict[str, Any] = field(default_factory=dict)

    @property
    def skipped(self) -> int:
        return len(self.records) - self.ran

    @property
    def scored(self) -> list[RunRecord]:
        return [r for r in self.records if r.role == "score"]

    @property
    def failed(self) -> list[RunRecord]:
        return [r for r in self.records if r.status == "error"]

    @property
    def table(self) -> pd.DataFrame:
        return frame([(c, _STATE[r.status]) for c, r in zip(self.cells, self.records)])


def _rescore(record: RunRecord, target: Target, folder: Folder) -> RunRecord:
    """The record measured against ``target`` from its curve, rewritten atomically if changed."""
    scored = _scored(record, target)
    if scored is not record:
        folder.write(scored)
    return scored


def _scored(record: RunRecord, target: Target) -> RunRecord:
    """The record measured against ``target`` from its curve (itself if it already is)."""
    if record.target == target:
        return record
    reached = to_target(record.curve, target) if record.status != "error" else None
    return record.model_copy(
        update={
            "target": target,
            "tokens_to_target": reached[0] if reached else None,
            "seconds_to_target": reached[1] if reached else None,
            "steps_to_target": reached[2] if reached else None,
        }
    )


def _final_targets(plan: Plan, targets: dict[str, float]) -> dict[str, Target]:
    """Each task's target, with the calibrated value of a calibrated one (``targets``)."""
    final = {}
    for tp in plan.tasks:
        if tp.target is not None:
            value = targets.get(tp.task_id, tp.target.value)
            final[tp.task_id] = tp.target.model_copy(update={"value": value})
    return final


def _unreachable(tp) -> dict[str, Target]:
    """A target no run reaches: selection then goes by the best metric."""
    t = tp.target
    return {
        tp.task_id: Target(
            metric=t.metric,
            value=-math.inf if t.direction == "min" else math.inf,
            direction=t.direction,
        )
    }


def baseline_choice(plan: Plan, tuned: list[RunRecord]) -> dict[str, dict]:
    """Per calibrated task, the baseline's configuration with the best median metric in tuning
    (the target is not known yet, so time to target cannot choose)."""
    chosen = {}
    for tp in plan.tasks:
        if tp.calibrate:
            mine = [r for r in tuned if r.optimizer == plan.baseline and r.task_key == tp.task_id]
            picks = select_from(mine, _unreachable(tp))
            if (tp.task_id, plan.baseline) in picks:
                chosen[tp.task_id] = picks[(tp.task_id, plan.baseline)].config
    return chosen


def calibrate(plan: Plan, records: list[RunRecord]) -> dict[str, dict[str, Any]]:
    """The calibrated target of each calibrated task, from its calibration records."""
    out = {}
    for tp in plan.tasks:
        if not tp.calibrate:
            continue
        mine = [r for r in records if r.task_key == tp.task_id]
        t = tp.target
        worst = math.inf if t.direction == "min" else -math.inf
        best = [r.best_metrics.get(t.metric, worst) if r.status == "done" else worst for r in mine]
        try:
            value = calibrated_value(best, t.direction, tp.entry.margin)
        except ValueError as exc:
            swept = len(plan.grid(plan.names.index(plan.baseline))) > 1
            fix = (
                "widen the baseline's sweep"
                if swept
                else f"change {plan.baseline}'s hparams (a smaller lr, say), or give it a sweep"
            )
            raise BenchError(f"cannot calibrate a target for {tp.task_id}: {exc}; {fix}") from exc
        out[tp.task_id] = {
            "metric": t.metric,
            "direction": t.direction,
            "margin": tp.entry.margin,
            "value": value,
            "baseline_values": best,
            "config": mine[0].config if mine else {},
            "seeds": [r.seed for r in mine],
        }
    return out


def _calibrate_each(plan: Plan, records: list[RunRecord]) -> tuple[dict, dict[str, str]]:
    """``calibrate`` task by task: the targets it could set, and why it could not for the rest
    (those tasks' scoring waits; the other tasks go on)."""
    found, failed = {}, {}
    for tp in plan.tasks:
        if tp.calibrate:
            try:
                found.update(calibrate(dataclasses.replace(plan, tasks=[tp]), records))
            except BenchError as exc:
                failed[tp.task_id] = str(exc)
    return found, failed


def run_plan(
    plan: Plan,
    folder: Folder,
    executor: ExecutorSettings,
    progress: Any,
    rerun: bool = False,
    log: dict | None = None,
) -> SuiteSummary:
    """Run the phases of ``plan`` into ``folder``, all with one executor (so a local pool's
    workers start once, not once per phase)."""
    for name in (CALIBRATION, SELECTION):  # damaged: reported before any work, not after it
        folder.read_json(name)
    with Executors(executor, log) as executors:
        return _run_phases(plan, folder, executors, progress, rerun)


def _run_phases(
    plan: Plan, folder: Folder, executors: Executors, progress: Any, rerun: bool
) -> SuiteSummary:
    cells: list[Cell] = []
    records: list[RunRecord] = []
    ran = 0

    def phase(name: str, todo: list[Cell]) -> list[RunRecord]:
        nonlocal ran
        progress.phase(name, len(todo))
        got, n = execute(todo, folder, executors, progress, rerun)
        # a record reused from a run with another target (which is not part of a run's id: it
        # only decides where the curve is read) is read against this one
        got = [
            _rescore(r, c.spec.target, folder) if c.spec.target is not None else r
            for c, r in zip(todo, got)
        ]
        ran += n
        cells.extend(todo)
        records.extend(got)
        return got

    tuned = phase("tune", plan.tune_cells()) if plan.tunes else []
    calibration: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}  # task -> why its target could not be calibrated
    if any(tp.calibrate for tp in plan.tasks):
        chosen = baseline_choice(plan, tuned)
        got = phase("calibrate", plan.calibrate_cells(chosen))
        calibration, failed = _calibrate_each(plan, got)
        folder.merge_json(CALIBRATION, calibration)  # other tasks' entries stay (--only)
    targets = {k: v["value"] for k, v in calibration.items()}
    final = _final_targets(plan, targets)
    tuned = [_rescore(r, final[r.task_key], folder) if r.task_key in final else r for r in tuned]
    records[: len(tuned)] = tuned
    usable = [r for r in tuned if r.task_key not in failed]
    picks = select_from(usable, final) if usable else {}
    selection = {
        f"{task}/{opt}": {
            "config": s.config,
            "trials": s.trials,
            "tokens": s.tokens,
            "grad_evals": s.grad_evals,
            "flags": s.flags,
        }
        for (task, opt), s in picks.items()
    }
    if tuned:
        folder.merge_json(SELECTION, selection)
    phase("score", plan.score_cells({k: s.config for k, s in picks.items()}, targets))
    if failed:  # the runs are recorded; the command says what is left, and fails
        others = " (the other tasks' cells ran)" if len(failed) < len(plan.tasks) else ""
        raise BenchError("; ".join(failed.values()) + others)
    return SuiteSummary(folder.path, plan.tier, cells, records, ran, calibration, selection)


# -- status -------------------------------------------------------------------------------------


def frame(rows: list[tuple[Cell, str]]) -> pd.DataFrame:
    columns = ["phase", "task", "optimizer", "config", "seed", "state", "run_id"]
    return pd.DataFrame(
        [
            (c.spec.role, c.spec.task_id, c.spec.optimizer, c.label, c.spec.seed, state, c.run_id)
            for c, state in rows
        ],
        columns=columns,
    )


def _suites_in(out: Path) -> list[tuple[Path, SuiteFile, str | None]]:
    paths = [out / RESOLVED] if (out / RESOLVED).is_file() else sorted((out / RUNS).glob("*.yaml"))
    if not paths:
        raise BenchError(f"{out} holds no suite run (no {RESOLVED}); run a suite there first")
    suites = []
    fix = "restore it, or run the suite into another --out"
    for path in paths:
        data = read_suite_file(path, fix)
        if not isinstance(data, dict):
            raise BenchError(f"{path} is damaged (not a suite); {fix}")
        tier = data.pop("tier", None)
        try:
            suites.append((path, SuiteFile.model_validate(data), tier))
        except Exception as exc:
            raise BenchError(f"{path} is damaged ({type(exc).__name__}); {fix}") from exc
    return suites


def planned_cells(out: Path) -> list[Cell]:
    """Every cell the folder's suite(s) have planned so far (later phases once known)."""
    folder = Folder(out)
    calibration = folder.read_json(CALIBRATION)
    selection = folder.read_json(SELECTION)
    for key, cal in calibration.items():
        value = cal.get("value") if isinstance(cal, dict) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BenchError(
                f"{Path(out) / CALIBRATION} is damaged (the target of {key} is {value!r}, not a "
                "number); delete it and rerun the suite to recompute it"
            )
    cells: list[Cell] = []
    for _, suite, _ in _suites_in(Path(out)):
        plan = build_plan(suite)
        tune = plan.tune_cells() if plan.tunes else []
        cells += tune
        tuned = {c.run_id: folder.record(c.run_id) for c in tune}
        have = [r for r in tuned.values() if r is not None]
        targets = {k: v["value"] for k, v in calibration.items()}
        if any(tp.calibrate for tp in plan.tasks):
            chosen = baseline_choice(plan, have)
            chosen.update({k: v.get("config", {}) for k, v in calibration.items()})
            calibrating = plan.calibrate_cells(chosen)
            cells += calibrating
            targets.update(_targets_from(plan, calibrating, folder, set(targets)))
        # a task's picks: from its tuning records once all are there (records copied from
        # another folder count), as a run would make them; else the folder's selection
        final = _final_targets(plan, targets)
        tuned_tasks = {c.spec.task_id for c in tune}
        done = tuned_tasks - {c.spec.task_id for c in tune if tuned[c.run_id] is None}
        mine = [_scored(r, final[r.task_key]) if r.task_key in final else r for r in have]
        picks = {k: s.config for k, s in select_from(mine, final).items() if k[0] in done}
        for key, v in selection.items():
            task, name = key.split("/", 1)
            if task not in done:
                picks[(task, name)] = v["config"]
        plan = dataclasses.replace(
            plan,
            tasks=[
                tp for tp in plan.tasks
                if tp.task_id not in tuned_tasks or any(k[0] == tp.task_id for k in picks)
            ],
        )  # fmt: skip
        cells += plan.score_cells(picks, targets)
    unique: dict[str, Cell] = {}  # several `bench run` commands may share cells
    for c in cells:
        unique.setdefault(c.run_id, c)
    return list(unique.values())


def _targets_from(plan: Plan, cells: list[Cell], folder: Folder, known: set[str]) -> dict:
    """The calibrated targets of the tasks not in ``known`` whose calibration cells all have
    records (copied from another folder, say), as the run computes them."""
    ready = []
    for tp in plan.tasks:
        mine = [c for c in cells if c.spec.task_id == tp.task_id]
        if tp.calibrate and tp.task_id not in known and mine:
            records = [folder.record(c.run_id) for c in mine]
            if all(r is not None for r in records):
                ready.append((tp, records))
    if not ready:
        return {}
    part = dataclasses.replace(plan, tasks=[tp for tp, _ in ready])
    try:
        found = calibrate(part, [r for _, records in ready for r in records])
    except BenchError:  # the run reports it; the cells wait as they would
        return {}
    return {k: v["value"] for k, v in found.items()}


def suite_status(out: str | Path) -> pd.DataFrame:
    """One row per planned cell: phase, task, optimizer, config, seed, state (``STATES``)."""
    from bench_cli.results.store import scan_records

    folder = Folder(out)
    rows, damaged = [], []
    cells = planned_cells(Path(out))
    for c in cells:
        record = folder.record(c.run_id)
        state = _STATE[record.status] if record else (folder.running(c.run_id) or "missing")
        rows.append((c, state))
        if record is None and folder.damaged(c.run_id):
            damaged.append(c.run_id)
    table = frame(rows)
    table.attrs["damaged"] = damaged  # records there but unreadable: a run runs them again
    table.attrs["damage"] = folder.damage()  # claims unreadable: a run refuses the folder
    planned = {c.run_id for c in cells}
    table.attrs["unplanned"] = sorted(  # copied in from another suite's folder, say
        r.run_id for r in scan_records(Path(out)).records if r.run_id not in planned
    )
    return table


def status_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Per phase, task and optimizer, how many cells are in each of ``STATES``."""
    counts = (
        table.groupby(["phase", "task", "optimizer"], sort=False)["state"]
        .value_counts()
        .unstack(fill_value=0)
        .reindex(columns=list(STATES), fill_value=0)
    )
    return counts.rename_axis(columns=None).reset_index()
