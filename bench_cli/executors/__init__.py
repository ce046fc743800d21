"""Executors run a phase's cells in parallel; ``execute`` is the one way any cell is run.

``execute`` reuses the cells whose record exists (``rerun`` replaces them), claims each other
cell atomically before running it (so coordinators sharing a folder share the work and never run
a cell twice), waits for cells that another live coordinator holds, and takes over claims whose
holder is gone. The executor (``local``, ``ray`` or ``slurm``) decides where claimed cells run.
"""

from __future__ import annotations

import time
from typing import Any

from bench_cli.config import ExecutorSettings
from bench_cli.folder import Folder
from bench_cli.plan import Cell
from bench_cli.results.record import RunRecord

POLL_SECONDS = 2.0


def make_executor(settings: ExecutorSettings, cells: list[Cell], log: dict | None = None):
    if settings.kind == "ray":
        from bench_cli.executors.ray import RayExecutor

        return RayExecutor(settings, log)
    if settings.kind == "slurm":
        from bench_cli.executors.slurm import SlurmExecutor

        return SlurmExecutor(settings, log)
    from bench_cli.executors import local

    gpus, need = _local_shape(settings, cells)
    if gpus:
        k = settings.runs_per_gpu or local.default_runs_per_gpu(gpus, need)
        return local.LocalExecutor(local.gpu_slots(gpus, k), log, settings.mps)
    return local.LocalExecutor(local.cpu_slots(settings.jobs, settings.threads), log)


class Executors:
    """The executor of one run of a plan (``bench run``, ``bench suite run``): made for the first
    cells that need running and kept for the phases after, so that a local pool's workers start
    once per command, not once per phase, and keep their tasks' prepared data. Cells that need
    other workers (other GPUs, a larger memory need) get a new one. Closed at the end."""

    def __init__(self, settings: ExecutorSettings, log: dict | None = None):
        self.settings, self.log = settings, log
        self._executor: Any = None
        self._key: tuple | None = None

    def for_cells(self, cells: list[Cell]):
        kind = self.settings.kind
        key = (kind, *_local_shape(self.settings, cells)) if kind == "local" else (kind,)
        key = tuple(tuple(k) if isinstance(k, list) else k for k in key)
        if self._executor is None or key != self._key:
            self.close()
            self._executor, self._key = make_executor(self.settings, cells, self.log), key
        return self._executor

    def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None and hasattr(executor, "close"):
            executor.close()

    def __enter__(self) -> Executors:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _local_shape(settings: ExecutorSettings, cells: list[Cell]) -> tuple[list[int], float | None]:
    """The GPUs a local pool for ``cells`` uses (none: CPU workers) and, when it chooses the runs
    per GPU, the cells' largest memory need."""
    gpus = settings.gpus if settings.gpus is not None else _visible_gpus(cells)
    need = _memory_need(cells) if gpus and not settings.runs_per_gpu else None
    return gpus, need


def _visible_gpus(cells: list[Cell]) -> list[int]:
    """Every visible GPU when the cells run on CUDA (device auto or cuda), else none."""
    devices = {c.spec.settings.device for c in cells}
    if not devices or devices - {"auto", "cuda"}:
        return []
    import torch

    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


def _memory_need(cells: list[Cell]) -> float:
    from bench_cli import api

    needs = {}
    for c in cells:
        key = (c.spec.task, repr(sorted(c.spec.task_options.items())))
        if key not in needs:
            needs[key] = api.make_task(c.spec.task, c.spec.task_options).memory_gib
    return max(needs.values(), default=1.0)


def execute(
    cells: list[Cell],
    folder: Folder,
    executors: Executors,
    progress: Any,
    rerun: bool = False,
) -> tuple[list[RunRecord], int]:
    """Run every cell of ``cells`` into ``folder`` (or reuse its record); return the records in
    the cells' order and how many ran now."""
    records: dict[str, RunRecord] = {}
    replace = {c.run_id for c in cells} if rerun else set()
    for c in cells:
        rec = None if c.run_id in replace else folder.record(c.run_id)
        if rec is not None:
            records[c.run_id] = rec
            progress.reused(c)
        elif folder.damaged(c.run_id):
            progress.warn(f"{c.run_id}: its record is damaged; running the cell again")
    ran = 0

    def claim(cell: Cell) -> bool:
        if cell.run_id not in replace and folder.record(cell.run_id) is not None:
            return False  # another coordinator finished it meanwhile
        return folder.claim(cell.run_id)

    while True:
        for c in cells:  # records written since: ours, or another coordinator's
            if c.run_id not in records and c.run_id not in replace:
                rec = folder.record(c.run_id)
                if rec is not None:
                    records[c.run_id] = rec
        todo = [c for c in cells if c.run_id not in records]
        if not todo:
            break
        done = executors.for_cells(todo).run(todo, folder, progress, claim)
        ran += len(done)
        replace -= set(done)
        if not done:  # every cell left is held by another live coordinator
            progress.waiting(todo)
            time.sleep(POLL_SECONDS)
    return [records[c.run_id] for c in cells], ran
