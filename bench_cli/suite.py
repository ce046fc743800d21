"""YAML suites: validate a suite file, run it into one folder, report the folder's status.

The suite file's format is described and validated in ``bench_cli.config``; ``bench_cli.plan``
turns it into cells in phases, ``bench_cli.protocol`` runs the phases, and ``bench_cli.executors``
runs each phase's cells. A suite folder holds one record per cell (``<run_id>.json``),
``suite.resolved.yaml`` (the suite with the tier applied; a folder holding another suite is
refused), ``environment.json``, ``calibration.json``, ``selection.json``, ``.running/`` (claims of
cells in progress) and ``.checkpoints/``. Rerunning the same command resumes: every cell whose
record exists is reused (a diverged or failed run is a record too); records are written
atomically, so a run killed at any point leaves no record and runs again.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path
from typing import Any

from bench_cli.config import apply_tier, executor_settings, load_suite
from bench_cli.errors import BenchError, ConfigError
from bench_cli.executors import check_settings
from bench_cli.folder import CALIBRATION, ENVIRONMENT, Folder, now
from bench_cli.plan import at_path, build_plan, count_cells
from bench_cli.progress import Progress
from bench_cli.protocol import (  # noqa: F401 - the suite API in one place
    STATES,
    SuiteSummary,
    resolved_text,
    run_plan,
    status_counts,
    suite_status,
)

#: a suite with more cells than this must be confirmed (``--max-cells``)
MAX_CELLS = 10_000


def validate_suite(path: str | Path) -> dict[str | None, dict[str, int]]:
    """Load and plan a suite file under each of its tiers: {tier: {phase: cells}}."""
    suite = load_suite(path)
    tiers: list[str | None] = list(suite.tiers) if suite.tiers else [None]
    if suite.tiers and suite.default_tier is None:
        tiers.insert(0, None)  # without --tier, the suite runs as written
    return {name: at_path(str(path), build_plan, suite, name).phase_sizes() for name in tiers}


def default_out(path: str | Path, tier: str | None) -> Path:
    return Path("suite-runs") / "-".join(filter(None, [Path(path).stem, tier]))


def write_environment(folder: Folder, source: str, tier: str | None, device: str) -> None:
    from bench_cli.environment import environment, resolve_device

    env = environment(resolve_device(device)).model_dump()
    info = {"suite": source, "tier": tier, "started_at": now(), "host": socket.gethostname()}
    info["cpu_count"] = os.cpu_count()
    folder.write_json(ENVIRONMENT, {**info, **env})


def run_suite(
    path: str | Path,
    tier: str | None = None,
    out: str | Path | None = None,
    resume: bool = True,
    progress: Progress | None = None,
    executor: dict[str, Any] | None = None,
    log: dict[str, Any] | None = None,
    max_cells: int = MAX_CELLS,
    only: list[str] | None = None,
) -> SuiteSummary:
    """Run every phase of the suite at ``path`` into ``out``, reusing the cells whose record is
    there already; with ``resume=False``, refuse a folder that holds records. With ``only``, run
    just those tasks (by id): the folder still belongs to the whole suite, and a later run (of
    other tasks, or of all) reuses these records."""
    if max_cells < 1:
        raise ConfigError(
            f"--max-cells is the most cells to run without asking: at least 1, got {max_cells}"
        )
    suite = load_suite(path)
    tier_name, _ = at_path(str(path), apply_tier, suite, tier)
    sizes = at_path(str(path), count_cells, suite, tier)
    out = Path(out) if out is not None else default_out(path, tier_name)
    if sum(sizes.values()) > max_cells:
        from bench_cli.dryrun import _fmt_seconds, rough_estimate

        seconds = rough_estimate(suite, tier, sizes, out)
        when = f", about {_fmt_seconds(seconds)} of run time" if seconds else ""
        raise ConfigError(
            f"{path}: {sum(sizes.values())} cells ({', '.join(f'{v} {k}' for k, v in sizes.items())}"
            f"{when}) is more than --max-cells {max_cells}; raise --max-cells to confirm"
        )
    settings = executor_settings(suite.executor, dict(executor or {}))
    plan = at_path(str(path), build_plan, suite, tier)
    whole = resolved_text(plan)
    if only:
        ids = [tp.task_id for tp in plan.tasks]
        unknown = [t for t in only if t not in ids]
        if unknown:
            raise ConfigError(
                f"{path}: no task {', '.join(map(repr, unknown))} in this suite; --only takes "
                f"task ids: {', '.join(ids)}"
            )
        plan = dataclasses.replace(plan, tasks=[tp for tp in plan.tasks if tp.task_id in only])
    folder = Folder(out)
    side = {ENVIRONMENT, CALIBRATION, "selection.json"}
    if not resume and out.is_dir() and any(p.name not in side for p in out.glob("[!.]*.json")):
        raise BenchError(
            f"{out} already holds records; resume (the default) to finish the suite there, or "
            "choose another --out"
        )
    log = {"kinds": suite.log, "group": suite.name or Path(path).stem, **(log or {})}
    check_settings(settings, log["kinds"], suite.device or "auto", log.get("mlflow_uri"))
    folder.claim_suite(whole)
    write_environment(folder, str(path), tier_name, suite.device or "auto")
    with folder, progress or Progress(quiet=True) as bar:
        return run_plan(plan, folder, settings, bar, log=log)


def calibration_of(out: str | Path) -> dict[str, dict[str, Any]]:
    """The calibrated targets stored in a suite folder ({} when none)."""
    path = Path(out) / CALIBRATION
    if not path.exists():
        return {}
    return Folder(out).read_json(CALIBRATION)


def selection_of(out: str | Path) -> dict[str, Any]:
    from bench_cli.folder import SELECTION

    return Folder(out).read_json(SELECTION) if (Path(out) / SELECTION).exists() else {}
