"""Executors run a phase's cells in parallel; ``execute`` is the one way any cell is run.

``execute`` reuses the cells whose record exists (``rerun`` replaces them), claims each other
cell atomically before running it (so coordinators sharing a folder share the work and never run
a cell twice), waits for cells that another live coordinator holds, and takes over claims whose
holder is gone. The executor (``local``, ``ray`` or ``slurm``) decides where claimed cells run;
under torchrun, every rank runs each cell together (``ranks``).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from bench_cli.config import ExecutorSettings
from bench_cli.errors import ConfigError
from bench_cli.folder import Folder
from bench_cli.results.record import RunRecord

if TYPE_CHECKING:  # the plan imports torch; ``forks`` must not
    from bench_cli.plan import Cell

POLL_SECONDS = 2.0


def _other(settings: ExecutorSettings, log: dict | None):
    """The Ray or SLURM executor."""
    if settings.kind == "ray":
        from bench_cli.executors.ray import RayExecutor

        return RayExecutor(settings, log)
    from bench_cli.executors.slurm import SlurmExecutor

    return SlurmExecutor(settings, log)


def check_settings(
    settings: ExecutorSettings, trackers: list[str], device: str, mlflow_uri: str | None = None
) -> None:
    """Refuse, before the command writes anything, what it could not run with: the executor's
    extra or a tracker's package is missing, nothing answers at the Ray cluster's or the MLflow
    server's address, SLURM is not here, or, for runs on ``device`` other than the CPU, a GPU it
    names is not one that torch sees."""
    if settings.kind == "ray":
        from bench_cli.executors.ray import check_address, ray_module

        ray_module()
        if settings.ray_address:
            check_address(settings.ray_address)
    elif settings.kind == "slurm":
        from bench_cli.executors.slurm import check_cluster, submitit_module

        submitit_module()
        check_cluster(settings.slurm.cluster)
    if trackers or mlflow_uri:
        from bench_cli.trackers import check_trackers

        check_trackers(list(trackers), mlflow_uri)
    if settings.kind == "local" and not settings.gpus and (settings.runs_per_gpu or settings.mps):
        import torch

        if device == "cpu" or (device == "auto" and torch.cuda.device_count() == 0):
            key = "runs_per_gpu" if settings.runs_per_gpu else "mps"
            flag = "--" + key.replace("_", "-")
            where = "--device cpu" if device == "cpu" else "this machine has no CUDA GPU"
            raise ConfigError(
                f"{flag} (or executor.{key} in a suite file): the runs are on the CPU ({where}), "
                f"where it does nothing; leave it out (--jobs N runs N at once on the CPU), or "
                "run on cuda"
            )
    if settings.kind == "local" and settings.gpus and device != "cpu":
        import torch

        n = torch.cuda.device_count()  # from NVML where it can: no CUDA set-up here
        if missing := [g for g in settings.gpus if g >= n]:
            sees = f"torch sees GPUs 0-{n - 1} only" if n else "torch sees no CUDA GPU here"
            raise ConfigError(
                f"GPU {', '.join(map(str, missing))} (--gpus, or executor.gpus in a suite "
                f"file) is not there: {sees}; name visible GPUs, or leave the option out"
            )
    if settings.kind == "local" and settings.gpus and not settings.runs_per_gpu:
        import torch

        if torch.cuda.device_count() == 0:  # runs on the CPU (--device cpu) in GPU slots
            raise ConfigError(
                "--gpus (or executor.gpus in a suite file) without --runs-per-gpu: how many runs "
                "share a GPU is chosen from its free memory, and torch sees no CUDA GPU here; "
                "leave --gpus out (--jobs N runs N at once on the CPU), or give --runs-per-gpu"
            )


def _local(settings: ExecutorSettings, gpus: list[int], need: float, log: dict | None):
    from bench_cli.executors import local

    if gpus:
        k = settings.runs_per_gpu or local.default_runs_per_gpu(gpus, need)
        return local.LocalExecutor(local.gpu_slots(gpus, k), log, settings.mps)
    return local.LocalExecutor(local.cpu_slots(settings.jobs, settings.threads), log)


class Executors:
    """The executor of one run of a plan (``bench run``, ``bench suite run``): made for the first
    cells that need running and kept for the phases after, so that a local pool's workers start
    once per command, not once per phase, and keep their tasks' prepared data. A local pool is
    made again only for cells on other GPUs, or, when it chose its runs per GPU from the cells'
    memory need, for cells that need more. Closed at the end."""

    def __init__(self, settings: ExecutorSettings, log: dict | None = None):
        self.settings, self.log = settings, log
        self.started_ns = time.time_ns()  # the command's start, for --rerun (``execute``)
        self._executor: Any = None
        self._gpus: list[int] | None = None
        self._need = 0.0  # the memory need the local pool was made for
        self._needs: dict = {}  # each task's

    def for_cells(self, cells: list[Cell]):
        from bench_cli import distributed  # torch is loaded by now: the plan imports it

        if distributed.world_size() > 1:  # a torchrun rank: all ranks run each cell
            if self._executor is None:
                from bench_cli.executors.ranks import RanksExecutor

                self._executor = RanksExecutor(self.log)
            return self._executor
        if self.settings.kind != "local":
            if self._executor is None:
                self._executor = _other(self.settings, self.log)
            return self._executor
        s = self.settings
        gpus = list(s.gpus) if s.gpus is not None else _visible_gpus(cells)  # none: CPU workers
        need = _memory_need(cells, self._needs) if gpus and not self.settings.runs_per_gpu else 0.0
        if self._executor is None or gpus != self._gpus or need > self._need:
            self.close()
            self._executor = _local(self.settings, gpus, need, self.log)
            self._gpus, self._need = gpus, need
        return self._executor

    def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None and hasattr(executor, "close"):
            executor.close()

    def __enter__(self) -> Executors:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _visible_gpus(cells: list[Cell]) -> list[int]:
    """Every visible GPU when the cells run on CUDA (device auto or cuda), else none."""
    devices = {c.spec.settings.device for c in cells}
    if not devices or devices - {"auto", "cuda"}:
        return []
    import torch

    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


def _memory_need(cells: list[Cell], known: dict) -> float:
    """The largest declared memory need (GiB) of the cells' tasks; ``known`` keeps each task's
    (by name and options) so that it is made once."""
    from bench_cli import api

    keys = set()
    for c in cells:
        key = (c.spec.task, json.dumps(c.spec.task_options, sort_keys=True, default=str))
        if key not in known:
            known[key] = api.make_task(c.spec.task, c.spec.task_options).memory_gib
        keys.add(key)
    return max((known[k] for k in keys), default=1.0)


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
    replaced = {c.run_id: folder.version(c.run_id) for c in cells} if rerun else {}

    def current(cell: Cell) -> RunRecord | None:
        """Its record; with ``rerun``, only one written since this command started (by another
        coordinator replacing it too: the work is shared): a file other than the one there
        when this phase began, or one written after the command's start."""
        if cell.run_id in replaced:
            v = folder.version(cell.run_id)
            if v == replaced[cell.run_id] and (v is None or v[1] < executors.started_ns):
                return None
        return folder.record(cell.run_id)

    for c in cells:
        rec = current(c)
        if rec is not None:
            records[c.run_id] = rec
            progress.reused(c)
        elif folder.damaged(c.run_id):
            progress.warn(f"{c.run_id}: its record is damaged; running the cell again")
    ran = 0

    def claim(cell: Cell) -> bool:
        if current(cell) is not None or not folder.claim(cell.run_id):
            return False
        if current(cell) is not None:  # its record was written and its claim released just before
            folder.release(cell.run_id)
            return False
        return True

    while True:
        for c in cells:  # records written since: ours, or another coordinator's
            if c.run_id not in records:
                rec = current(c)
                if rec is not None:
                    records[c.run_id] = rec
        todo = [c for c in cells if c.run_id not in records]
        if not todo:
            break
        done = executors.for_cells(todo).run(todo, folder, progress, claim)
        ran += len(done)
        if not done:  # every cell left is held by another live coordinator
            progress.waiting(todo)
            time.sleep(POLL_SECONDS)
    return [records[c.run_id] for c in cells], ran
