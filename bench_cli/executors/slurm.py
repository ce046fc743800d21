"""The SLURM executor: cells go to SLURM through submitit, as one job array per phase.

Partition, time, GPUs, account and extra sbatch flags come from the suite file's
``executor.slurm`` or the command line. ``--slurm-cluster local`` uses submitit's local executor
(for tests and a single machine). A preempted or timed-out job is requeued by submitit
(``checkpoint``) and its run resumes from its last checkpoint. This process waits for the array,
keeping the cells' claims fresh; stopped (Ctrl-C, SIGTERM), it cancels the jobs still running.
"""

from __future__ import annotations

import shutil
import time

from bench_cli.errors import BenchError, ConfigError
from bench_cli.folder import Folder
from bench_cli.plan import Cell

try:
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # the extra is missing: SlurmExecutor says so when it is used
    _Checkpointable = object


class CellJob(_Checkpointable):
    """One cell as a submitit job; requeued on preemption (``Checkpointable``)."""

    def __init__(self, out: str, log: dict | None, threads: int | None):
        self.out, self.log, self.threads = out, log, threads

    def __call__(self, cell: Cell) -> str:
        from bench_cli.executors import worker

        worker.set_threads(self.threads)
        return worker.execute_cell(cell, self.out, None, self.log)


def parameters(settings) -> dict:
    """What submitit's ``update_parameters`` receives."""
    s = settings.slurm
    params = {"timeout_min": s.time_minutes, "slurm_array_parallelism": s.array_parallelism}
    if s.gpus_per_node is not None:
        params["gpus_per_node"] = s.gpus_per_node
    if s.cpus_per_task is not None:
        params["cpus_per_task"] = s.cpus_per_task
    if s.mem_gb is not None:
        params["mem_gb"] = s.mem_gb
    if s.partition is not None:
        params["slurm_partition"] = s.partition
    if s.account is not None:
        params["slurm_account"] = s.account
    if s.extra:
        params["slurm_additional_parameters"] = dict(s.extra)
    return params


def submitit_module():
    """submitit, or one error line that names the extra to install."""
    try:
        import submitit
    except ImportError:
        raise BenchError(
            'the slurm executor needs submitit; install it with: pip install "bench-cli[slurm]"'
        ) from None
    return submitit


def check_cluster(cluster: str | None) -> None:
    """SLURM itself is here, unless submitit's local executor is asked for (submitit would
    otherwise run the cells on this machine without a word)."""
    if cluster in (None, "slurm") and shutil.which("sbatch") is None:
        raise ConfigError(
            "--executor slurm: SLURM is not here (no sbatch on PATH); run the command on the "
            "cluster's login node, or add --slurm-cluster local (executor.slurm.cluster: local) "
            "to run the cells on this machine through submitit"
        )


class SlurmExecutor:
    POLL = 2.0

    def __init__(self, settings, log: dict | None = None):
        self.submitit, self.settings, self.log = submitit_module(), settings, log

    def executor(self, folder: Folder):
        cluster = self.settings.slurm.cluster
        ex = self.submitit.AutoExecutor(folder=folder.path / ".slurm" / "%j", cluster=cluster)
        params = parameters(self.settings)
        if ex.cluster != "slurm":
            params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
        ex.update_parameters(**params)
        return ex

    def submit(self, cells: list[Cell], folder: Folder, claim) -> list[tuple[Cell, object]]:
        mine = [c for c in cells if claim(c)]
        if not mine:
            return []
        job = CellJob(str(folder.path), self.log, self.settings.threads)
        jobs = self.executor(folder).map_array(job, mine)
        return list(zip(mine, jobs))

    def run(self, cells: list[Cell], folder: Folder, progress, claim) -> list[str]:
        since = time.time()  # a record from before is not its run's (--rerun replaces it)
        pending = self.submit(cells, folder, claim)
        for cell, _ in pending:
            progress.started(cell)
        try:
            return self._wait(pending, folder, progress, since)
        except BaseException:  # Ctrl-C or SIGTERM: the claims are released, so stop the jobs
            for _, job in pending:
                if not job.done():
                    try:
                        job.cancel(check=False)
                    except OSError:  # no scancel here: the cluster's own limits end them
                        pass
            raise

    def _wait(self, pending, folder: Folder, progress, since: float) -> list[str]:
        ran = []
        while pending:
            still = []
            for cell, job in pending:
                if not job.done():
                    still.append((cell, job))
                    continue
                try:
                    status = job.result()
                except Exception as exc:  # noqa: BLE001 - a failed job is an error record
                    status = "error"
                    if folder.record_since(cell.run_id, since) is None:
                        from bench_cli.executors.worker import failed_record

                        first = str(exc).strip().splitlines()
                        reason = f"the SLURM job {job.job_id} failed: {first[-1] if first else exc}"
                        folder.write(failed_record(cell.spec, reason))
                folder.release(cell.run_id)
                ran.append(cell.run_id)
                progress.finished(cell, status)
            pending = still
            if pending:
                time.sleep(self.POLL)
                progress.tick()
        return ran
