"""One run on several processes (``torchrun --nproc-per-node N -m bench_cli run ...``).

Each rank trains on its slice of every global batch under DistributedDataParallel, so the
averaged gradient equals the single-process gradient of the whole batch. Tokens are counted
globally (a task's ``units_per_step`` is the global batch), rank 0 evaluates and broadcasts the
metrics, and only rank 0 writes the record, unless the run fails on a rank (``_failed``).
"""

from __future__ import annotations

import os
import time
from typing import Any, NoReturn

import torch
import torch.distributed as dist

from bench_cli.errors import BenchError


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def init(device_type: str) -> None:
    """Join the process group torchrun describes in the environment (once per process)."""
    if world_size() > 1 and not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend)
        if device_type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def shard(batch: Any) -> Any:
    """This rank's contiguous slice of a global batch (tensors split along their first axis)."""
    if not active():
        return batch
    r, n = dist.get_rank(), dist.get_world_size()
    if isinstance(batch, torch.Tensor):
        if batch.shape[0] % n:
            raise ValueError(f"the global batch ({batch.shape[0]}) does not split over {n} ranks")
        k = batch.shape[0] // n
        return batch[r * k : (r + 1) * k]
    if isinstance(batch, (tuple, list)):
        return type(batch)(shard(b) for b in batch)
    if isinstance(batch, dict):
        return {key: shard(v) for key, v in batch.items()}
    return batch


def mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of a scalar over ranks (for the logged loss)."""
    if not active():
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / dist.get_world_size()


def from_rank0(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _failed(folder: Any, record: Any, since: float) -> NoReturn:
    """A run that failed on this rank (another rank may have failed too, or not at all). A rank
    that did not fail may be waiting in a collective that this one will never join, so no
    collective follows: this rank writes the ``error`` record, unless another rank wrote one
    first (with the first cause: this rank's may only say that the other one left), and stops
    with an error, which makes torchrun stop the others."""
    if folder.record_since(record.run_id, since) is None:
        folder.write(record)
    first = (record.error or "-").splitlines()[0]
    raise BenchError(f"{record.optimizer} failed on rank {rank()}: {first}")


def run_request(req: Any, out: Any, rerun: bool = False) -> list:
    """``bench run`` under torchrun: each cell trained by all ranks together; rank 0 reuses or
    writes its record. Returns the records (on every rank)."""
    from bench_cli import api
    from bench_cli.environment import resolve_device
    from bench_cli.folder import Folder
    from bench_cli.plan import build_plan
    from bench_cli.results.store import ensure_writable_dir
    from bench_cli.runner import run

    plan = build_plan(api.request_suite(req))
    if plan.tunes:
        raise ValueError("a sweep under torchrun is not supported; run one configuration")
    cells = plan.score_cells({}, {})
    task = api.make_task(cells[0].spec.task, cells[0].spec.task_options)
    if not task.distributed:
        raise BenchError(
            f"task {cells[0].spec.task!r} does not train under torchrun (it has no batch to "
            "split over ranks); run it without torchrun"
        )
    folder = Folder(out)
    folder.check_for_run()  # on every rank, before any of them waits for the others
    probe = resolve_device(cells[0].spec.settings.device)
    init(probe.type)
    device = torch.device("cuda", torch.cuda.current_device()) if probe.type == "cuda" else probe
    task.prepare(device)
    ensure_writable_dir(folder.path)  # on every rank: made once all else is ready
    records = []
    for cell in cells:
        old = folder.record(cell.run_id) if rank() == 0 and not rerun else None
        old = from_rank0(old)
        if old is not None:
            records.append(old)
            continue
        since = time.time()
        record = run(cell.spec, task, device)
        if record.status == "error" and active():
            _failed(folder, record, since)
        if rank() == 0:
            folder.write(record)
        records.append(record)
    if active():
        dist.barrier()
    return records
