"""What runs one cell, wherever it runs: in a local worker process, a Ray task or a SLURM job.

A process keeps each task's prepared data between cells (``_PREPARED``), so the cost of loading
data is paid once per worker, not once per run. A task whose ``prepare`` raises, or calls
``sys.exit``, gives an ``error`` record for each of its cells; nothing here raises for a failed
run.
"""

from __future__ import annotations

import json
import time
import traceback
from pathlib import Path
from typing import Any

from bench_cli.errors import Terminated, describe
from bench_cli.executors import mps
from bench_cli.folder import CHECKPOINTS, Folder, now
from bench_cli.plan import Cell
from bench_cli.results.record import Env, RunRecord, TrainPoint
from bench_cli.spec import Callbacks, RunCallback, RunSpec, record_fields

#: (task, options, device) -> (task, device) or the exception its preparation raised
_PREPARED: dict[str, Any] = {}


class Events(RunCallback):
    """Sends progress to the coordinator: start, the step about once a second, end."""

    def __init__(self, send, run_id: str, total: int):
        self.send, self.run_id, self.total = send, run_id, total
        self.last = 0.0

    def on_start(self, spec: RunSpec, unit: str) -> None:
        self.send(("start", self.run_id, 0, self.total))

    def on_log(self, point: TrainPoint, tokens_per_second: float) -> None:
        if time.monotonic() - self.last >= 1.0:
            self.last = time.monotonic()
            self.send(("step", self.run_id, point.step, self.total))


def set_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def _prepared(spec: RunSpec):
    from bench_cli import api
    from bench_cli.environment import resolve_device

    try:
        device = resolve_device(spec.settings.device)
    except Exception as exc:  # noqa: BLE001
        return exc
    key = json.dumps([spec.task, spec.task_options, str(device)], sort_keys=True)
    if key not in _PREPARED:
        try:
            task = api.make_task(spec.task, spec.task_options)
            task.prepare(device)
            _PREPARED[key] = (task, device)
        except Terminated:
            raise
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a task's bug: its cells' result
            _PREPARED[key] = exc
    return _PREPARED[key]


def failed_record(
    spec: RunSpec, reason: str, unit: str = "steps", threads: int | None = None
) -> RunRecord:
    """The ``error`` record of a cell that could not run (set-up failed, its worker died);
    ``threads``: the CPU threads its worker had, where known."""
    import platform

    import bench_cli

    return RunRecord(
        **record_fields(spec),
        unit=unit,
        status="error",
        error=reason,
        env=Env(
            device=spec.settings.device,
            device_name="-",
            torch="-",
            bench=bench_cli.__version__,
            python=platform.python_version(),
            platform=platform.platform(),
            threads=threads,
        ),
        started_at=now(),
        finished_at=now(),
    )


def _failure(what: str, exc: BaseException) -> str:
    """An error record's reason: what failed, the exception (or ``sys.exit``), and where (the
    innermost frames of its traceback)."""
    trace = "".join(traceback.format_exception(exc, limit=-3))
    return f"{what}: {describe(exc)}\n{trace}"


def execute_cell(
    cell: Cell,
    out: str | Path,
    callback: RunCallback | None = None,
    log: dict[str, Any] | None = None,
) -> str:
    """Run ``cell`` and write its record into ``out``; returns the record's status. Under
    torchrun every rank runs it and rank 0 writes the record (``bench_cli.executors.ranks``)."""
    from bench_cli import api
    from bench_cli import distributed as ddp
    from bench_cli.runner import run as run_loop

    folder = Folder(out)
    spec = cell.spec
    since = time.time()
    try:
        api.load_plugins(list(cell.plugins))
        prepared = _prepared(spec)
    except Terminated:
        raise
    except (Exception, SystemExit) as exc:  # noqa: BLE001
        prepared = exc
    if isinstance(prepared, BaseException):
        record = failed_record(spec, _failure("the task's set-up failed", prepared))
    else:
        task, device = prepared
        trackers = None
        if log and log.get("kinds"):
            from bench_cli.trackers import tracker_callback

            trackers = tracker_callback(
                log["kinds"], log.get("group", ""), Path(out), log.get("mlflow_uri")
            )
        try:
            record = run_loop(
                spec,
                task,
                device,
                Callbacks(callback, trackers),
                checkpoint_dir=folder.path / CHECKPOINTS,
            )
        except Terminated:
            raise
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - plug-in code around the loop
            record = failed_record(spec, _failure("the run failed outside its training loop", exc))
    checkpoint = folder.path / CHECKPOINTS / f"{spec.run_id}.pt"
    if record.status == "error" and ddp.active():
        checkpoint.unlink(missing_ok=True)  # a rerun starts over, as it does without torchrun
        ddp.failed(folder, record, since)  # the other ranks may wait for this one: it ends here
    if ddp.rank() == 0:  # under torchrun, rank 0 writes the record of every rank's run
        folder.write(record)
        if not mps.failed(record.error):  # a run lost with its MPS server runs again from here
            checkpoint.unlink(missing_ok=True)
    return record.status
