"""Runs on several processes (``torchrun --nproc-per-node N -m bench_cli run ...``).

The command takes its one path on rank 0 (planning, claims, reused records, checkpoints, the
progress), and every cell it runs is trained by all ranks together (``under_torchrun``). Each
rank trains on its slice of every global batch under DistributedDataParallel, so the averaged
gradient equals the single-process gradient of the whole batch. Tokens are counted globally (a
task's ``units_per_step`` is the global batch), rank 0 evaluates and broadcasts the metrics, and
only rank 0 writes the record, unless the run fails on a rank (``failed``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any, NoReturn, TypeVar

import torch
import torch.distributed as dist

from bench_cli.errors import BenchError, ConfigError

T = TypeVar("T")

#: how long the other ranks wait for rank 0's next order between cells: as long as it lives (it
#: may prepare a task's data, or wait for another coordinator's cells, for hours; torchrun stops
#: them when it dies)
ORDERS_TIMEOUT = timedelta(days=365)
_orders: Any = None  # the process group (gloo) the orders go through


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def init(device: str) -> None:
    """Join the process group torchrun describes in the environment (once per process): NCCL on
    the rank's own GPU (``LOCAL_RANK``) unless the runs are on the CPU, gloo there. No CUDA
    context is made before the rank's GPU is chosen."""
    global _orders
    if world_size() > 1 and not dist.is_initialized():
        if device in ("auto", "cuda") and torch.cuda.is_available():
            gpu = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(gpu)
            dist.init_process_group("nccl", device_id=gpu)
        else:
            dist.init_process_group("gloo")
        # the training's collectives keep the backend's deadline (NCCL's 10 minutes), which
        # ends a rank stuck in one; the orders between cells have none
        _orders = dist.new_group(backend="gloo", timeout=ORDERS_TIMEOUT)


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


def from_rank0(obj: Any, group: Any = None) -> Any:
    """Rank 0's ``obj`` on every rank (inside a run)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=group)
    return box[0]


def order(obj: Any = None) -> Any:
    """Rank 0's order between cells (``bench_cli.executors.ranks``), on every rank, without a
    deadline: the other ranks wait for it while rank 0 plans, prepares data or waits."""
    return from_rank0(obj, _orders)


def close() -> None:
    """Leave the process group together: every rank waits for the others, so that none exits
    while a peer still reads from it."""
    global _orders
    if active():
        dist.barrier(group=_orders)
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _orders = None


def failed(folder: Any, record: Any, since: float) -> NoReturn:
    """A run that failed on this rank (another rank may have failed too, or not at all). A rank
    that did not fail may be waiting in a collective that this one will never join, so no
    collective follows: this rank writes the ``error`` record, unless another rank wrote one
    first (with the first cause: this rank's may only say that the other one left), and stops
    with an error, which makes torchrun stop the others."""
    if folder.record_since(record.run_id, since) is None:
        folder.write(record)
    first = (record.error or "-").splitlines()[0]
    raise BenchError(f"{record.optimizer} failed on rank {rank()}: {first}")


def under_torchrun(plan: Any, executor: dict, command: Callable[[], T]) -> T | None:
    """A command (``bench run``, ``bench suite run``) of ``plan`` on a torchrun rank. Every rank
    first refuses what ranks cannot run (no collective waits yet, so each says why): executor
    options, a GPU named by number, runs on several devices, a task with no batch to split, a
    batch that does not split over the ranks. Then the ranks join the process group; rank 0 runs
    ``command``, the command's one path, whose cells every rank trains together
    (``bench_cli.executors.ranks``), and returns its result; the other ranks return None once
    rank 0 is done."""
    from bench_cli import api
    from bench_cli.executors import ranks

    if given := [k for k, v in executor.items() if v not in (None, {}, [])]:
        names = ("--" + ("executor" if k == "kind" else k.replace("_", "-")) for k in given)
        raise ConfigError(
            "under torchrun every run trains on all ranks together: leave out the executor options "
            f"({', '.join(names)}); torchrun's --nproc-per-node chooses the processes"
        )
    specs = [plan.cell(tp, 0, plan.grid(0)[0], 0, "score", None).spec for tp in plan.tasks]
    devices = sorted({s.settings.device for s in specs})
    if len(devices) > 1:
        raise ConfigError(
            f"under torchrun all runs train on one kind of device; these name {', '.join(devices)}"
        )
    if devices[0] not in ("auto", "cuda", "cpu"):
        raise ConfigError(
            f"--device {devices[0]} under torchrun: each rank trains on the GPU of its LOCAL_RANK; "
            "use --device cuda (or auto, or cpu)"
        )
    for s in specs:
        task = api.make_task(s.task, s.task_options)
        if not task.distributed:
            raise BenchError(
                f"task {s.task!r} does not train under torchrun (it has no batch to split over "
                "ranks); run it without torchrun"
            )
        batch, n = getattr(task.options, "batch_size", None), world_size()
        if isinstance(batch, int) and batch % n:
            raise ConfigError(
                f"task {s.task!r}: its global batch of {batch} does not split over {n} ranks; "
                f"set batch_size to a multiple of {n} (--set batch_size=N, or the suite's task "
                f"options), or choose a --nproc-per-node that divides {batch}"
            )
    init(devices[0])
    if rank() == 0:
        return ranks.lead(command)
    ranks.follow()
    return None
