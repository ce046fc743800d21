"""The local executor: a pool of worker processes on this machine.

On CUDA, ``runs_per_gpu`` workers per visible GPU (each sees one GPU through
``CUDA_VISIBLE_DEVICES``); on a CPU, ``jobs`` workers, each with ``cores // jobs`` threads. A worker
starts when a cell is first claimed for it, lives through every phase of the command and keeps
each task's prepared data between cells. A worker that dies (killed, crashed, out of host memory)
leaves an ``error`` record for its cell naming the reason, and a new worker takes its place. With
one worker, or one cell and no worker started yet, the cells run in this process (no start-up of
a second process). Workers are forked from a fork server that imported torch and the run loop
once, or spawned from a library user's script (``forks``), and each exits when its coordinator is
gone (``_die_with_coordinator``). When MPS is used (``mps.use_mps``), workers that share a GPU
run under the pool's own MPS daemon, whose pipe folder each gets through its environment when it
starts.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import select
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Any

from bench_cli.errors import BenchError, clip, ended
from bench_cli.executors import forks, mps, worker
from bench_cli.folder import Folder
from bench_cli.plan import Cell
from bench_cli.results.store import current_umask


@dataclass(frozen=True)
class Slot:
    """Where one worker runs: a GPU (or none) and its CPU threads."""

    gpu: int | None
    threads: int | None


def _die_with_coordinator() -> None:
    """Stop this worker when the coordinator that started it is gone, however it went (killed
    with SIGKILL too): a thread waits on multiprocessing's parent sentinel, a pipe whose other
    end only the coordinator holds, and ends the process when it closes. (A fork server's child
    has the fork server for a parent, so the parent's pid says nothing about the coordinator.)"""
    sentinel = mp.parent_process().sentinel

    def watch() -> None:
        wait([sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="coordinator-watch", daemon=True).start()


def _serve(inbox, results, env: dict, umask: int, threads: int | None, log: dict | None) -> None:
    """A worker process: run the cells it is sent through ``inbox`` until it gets None, and send
    their progress and end through ``results``. Both are pipes of its own, with no lock: a worker
    killed while it sends breaks only its own pipe, where a shared queue would stay locked for
    every other worker, and one that starts as its coordinator exits finds no lock gone. Each
    message fits in one atomic pipe write (4 KiB), so a kill never leaves half of one. ``env``
    and ``umask`` are the coordinator's when it asked for the worker (``env`` with this worker's
    GPU and MPS pipes): a forked worker starts with its fork server's, and they are set before
    CUDA is first used. (multiprocessing sets ``sys.path`` and the working folder to the
    coordinator's.)"""
    _die_with_coordinator()
    os.environ.clear()
    os.environ.update(env)
    os.umask(umask)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the coordinator handles Ctrl-C
    worker.set_threads(threads)
    while True:
        try:
            item = inbox.recv()
        except EOFError:  # the coordinator is gone
            return
        if item is None:
            return
        cell, out = item
        events = worker.Events(results.send, cell.run_id, cell.spec.settings.steps)
        try:
            status = worker.execute_cell(cell, out, events, log)
            results.send(("end", cell.run_id, status, None))
        except BaseException as exc:  # noqa: BLE001 - reported to the coordinator, not lost
            reason = clip(f"{type(exc).__name__}: {exc}", 800)  # 4 bytes a character at most
            results.send(("end", cell.run_id, "fail", reason))


@dataclass
class _Worker:
    """A worker process. Its fork server reports its exit; were the fork server gone (killed),
    multiprocessing would take the worker for dead and could no longer signal it, so on Linux
    the process is watched and signalled through a pidfd of its own."""

    slot: Slot
    process: Any
    inbox: Any  # the writing end of its pipe for cells
    results: Any  # the reading end of its pipe; None once it has closed
    cell: Cell | None = None
    since: float = 0.0  # when its cell was sent: an older record (before --rerun) is not its
    pidfd: int | None = None

    @classmethod
    def of(cls, slot: Slot, process, inbox, results) -> _Worker:
        """The worker of a process just started."""
        w = cls(slot, process, inbox, results)
        if hasattr(os, "pidfd_open"):
            with contextlib.suppress(OSError):  # it has exited already, or the kernel has none
                w.pidfd = os.pidfd_open(process.pid)
                weakref.finalize(w, os.close, w.pidfd)
        return w

    def give(self, item) -> None:
        """Send it a cell, or None to stop. One that has died gets nothing (and is found dead)."""
        with contextlib.suppress(BrokenPipeError):
            self.inbox.send(item)

    def receive(self):
        """Its next message, or None when its pipe has closed (the worker has exited, perhaps
        in the middle of a message)."""
        try:
            return self.results.recv()
        except (EOFError, OSError):
            self.results.close()
            self.results = None
            return None

    def alive(self) -> bool:
        if self.process.is_alive():
            return True
        return self.pidfd is not None and not select.select([self.pidfd], [], [], 0)[0]

    def join(self, timeout: float) -> None:
        if self.pidfd is None:
            self.process.join(timeout)
        else:
            select.select([self.pidfd], [], [], timeout)  # readable once it has exited

    def send(self, sig: int) -> None:
        """SIGTERM or SIGKILL, to the process itself (a pid that is reused meanwhile is safe)."""
        if self.pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.pidfd, sig)
        elif sig == signal.SIGTERM:
            self.process.terminate()
        else:
            self.process.kill()


#: how many times the MPS daemon may exit, or its server fail, in one command
MPS_FAILURES = 3


def _lost(record, daemon_gone: bool) -> bool:
    """Whether a run under MPS, with this record of its own (or none), was lost to the MPS and
    runs again: it wrote no record, or an ``error`` one that CUDA's MPS error explains, or any
    ``error`` once the daemon is gone (a run's first failing call can be another library's)."""
    return record is None or record.status == "error" and (daemon_gone or mps.failed(record.error))


@dataclass
class LocalExecutor:
    """A pool of workers, one per slot, each started when a cell is first claimed for it. The
    workers, their prepared data and the MPS daemon stay from one ``run`` to the next (the
    phases of a suite) until ``close``."""

    slots: list[Slot]
    log: dict | None = None
    mps: bool | None = None
    ctx: Any = field(default_factory=forks.context)
    _workers: list[_Worker | None] = field(default_factory=list, init=False)
    _mps: mps.Daemon | None = field(default=None, init=False)
    _mps_failures: int = field(default=0, init=False)
    _started: bool = field(default=False, init=False)

    def run(
        self, cells: list[Cell], folder: Folder, progress, claim: Callable[[Cell], bool]
    ) -> list[str]:
        """Run the cells of ``cells`` that ``claim`` grants; return the run ids it ran."""
        if len(self.slots) == 1 or (len(cells) == 1 and not self._started):
            return self._run_inline(cells, folder, progress, claim)  # no process to start
        try:
            return self._run_pool(cells, folder, progress, claim)
        except BaseException:
            self.close()  # an interruption (Ctrl-C, SIGTERM) or a failure: stop the busy cells
            raise

    def _run_pool(self, cells, folder, progress, claim) -> list[str]:
        if not self._workers:
            self._workers = [None] * len(self.slots)
        workers = self._workers
        todo = list(cells)
        ran: list[str] = []
        while True:
            if self._mps is not None and not self._mps.alive():
                todo[:0] = self._mps_lost(folder, progress, ran)
            for i in range(len(workers)):
                while (workers[i] is None or workers[i].cell is None) and todo:
                    cell = todo.pop(0)
                    if claim(cell):
                        try:
                            w = workers[i] = self._ready(i)
                        except BaseException:
                            folder.release(cell.run_id)  # never started: free to run later
                            raise
                        w.cell, w.since = cell, time.time()
                        w.give((cell, str(folder.path)))
                        progress.started(cell)
            busy = {w.cell.run_id: w for w in workers if w is not None and w.cell is not None}
            if not busy:
                return ran
            pipes = {w.results: w for w in busy.values() if w.results is not None}
            progress.tick()
            for pipe in wait(list(pipes), 1.0):
                w = pipes[pipe]
                message = w.receive()
                if message is not None and self._received(w, message, folder, progress, ran):
                    todo[:0] = self._mps_lost(folder, progress, ran)
                    break  # every worker was replaced
            for i, w in enumerate(workers):
                if w is not None and w.cell is not None and not w.alive():
                    ran.append(w.cell.run_id)
                    self._died(w, folder, progress)
                    workers[i] = None  # a new worker takes the slot's next cell

    def _received(self, w: _Worker, message, folder: Folder, progress, ran: list[str]) -> bool:
        """Act on a message of ``w``'s: its cell's step, or its end. True when the cell ended
        with an error because the MPS was lost (``_mps_lost`` is then the caller's)."""
        kind, run_id, *rest = message
        if w.cell is None or w.cell.run_id != run_id:
            return False
        if kind in ("start", "step"):
            progress.step(run_id, rest[0], rest[1])
        elif kind == "end" and rest[0] == "error" and self._mps_failed(folder, w):
            return True
        elif kind == "end":
            cell, w.cell = w.cell, None
            folder.release(cell.run_id)
            if rest[0] == "fail":
                raise BenchError(f"{cell.spec.task_id} {cell.spec.optimizer}: {rest[1]}")
            ran.append(cell.run_id)
            progress.finished(cell, rest[0])
        return False

    def _ready(self, i: int) -> _Worker:
        """Slot ``i``'s idle worker, started now if it has none or its worker has died."""
        w = self._workers[i]
        if w is not None and w.alive():
            return w
        if not self._started and mps.use_mps(self.mps, self.slots):  # before the first worker
            self._mps = mps.start(required=bool(self.mps))
        self._started = True
        return self._start(self.slots[i])

    def close(self) -> None:
        """Stop the pool. Idle workers are told to stop; busy ones only remain on the way out
        of an interruption (Ctrl-C, SIGTERM) or a failure, so their cells stop now: their claims
        read as interrupted, and a rerun takes them over (from a checkpoint when there is one).
        Workers still running after 5 s are killed, and so is every worker left when the wait is
        interrupted (a second Ctrl-C). Then the MPS daemon, once no worker is left."""
        workers = [w for w in self._workers if w is not None]
        self._workers = []
        try:
            for w in workers:
                if w.alive():
                    if w.cell is None:
                        w.give(None)
                    else:
                        w.send(signal.SIGTERM)
            deadline = time.monotonic() + 5
            for w in workers:
                w.join(timeout=max(0.0, deadline - time.monotonic()))
        finally:
            for w in workers:
                if w.alive():
                    w.send(signal.SIGKILL)
            daemon, self._mps = self._mps, None
            if daemon is not None:
                daemon.close()
            self._started = False

    def _start(self, slot: Slot) -> _Worker:
        inbox, to_worker = self.ctx.Pipe(duplex=False)
        results, sender = self.ctx.Pipe(duplex=False)
        env = dict(os.environ)
        if slot.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(slot.gpu)
        env.update(self._mps.env if self._mps is not None else {})
        p = self.ctx.Process(
            target=_serve,
            args=(inbox, sender, env, current_umask(), slot.threads, self.log),
            daemon=True,
        )
        p.start()
        inbox.close()  # the worker's ends are the worker's alone: its pipes close with it
        sender.close()
        return _Worker.of(slot, p, to_worker, results)

    def _mps_failed(self, folder: Folder, w: _Worker) -> bool:
        """Whether the run of ``w``'s cell, which ended with an error, was lost to the MPS."""
        if self._mps is None:
            return False
        return _lost(folder.record_since(w.cell.run_id, w.since), not self._mps.alive())

    def _mps_lost(self, folder: Folder, progress, ran: list[str]) -> list[Cell]:
        """The MPS daemon has exited, or its server failed under a run: every worker's CUDA
        context is gone with it. Every worker is stopped (new ones take their slots), the daemon
        is started again once it has exited (one that is shutting down is waited for), and the
        cells that were running go back to run again when they were lost (``_lost``; an error
        record is removed), while a cell that finished keeps its record. The third such failure
        in one command is an error, which leaves those cells to a rerun."""
        self._mps_failures += 1
        for w in self._workers:
            if w is not None:
                w.send(signal.SIGKILL)
        exited = not self._mps.settled()
        again: list[Cell] = []
        for i, w in enumerate(self._workers):
            if w is None:
                continue
            w.join(timeout=5)  # killed: it writes nothing more, even if it lingers
            self._workers[i] = None
            cell = w.cell
            if cell is None:
                continue
            record = folder.record_since(cell.run_id, w.since)
            if _lost(record, exited):
                folder.discard(cell.run_id)
                again.append(cell)
            else:
                ran.append(cell.run_id)
                progress.finished(cell, record.status)
            folder.release(cell.run_id)
        what = (
            f"the CUDA MPS daemon exited ({ended(self._mps.process.returncode)})"
            if exited
            else "the CUDA MPS server failed under a run"
        )
        if self._mps_failures >= MPS_FAILURES:
            raise BenchError(
                f"{what} ({MPS_FAILURES} MPS failures in this command); rerun the command to "
                "resume, or run with --no-mps"
            )
        then = "starting it again, with new workers" if exited else "new workers replace the old"
        cells = (
            "; the cell that was running runs again"
            if len(again) == 1
            else f"; the {len(again)} cells that were running run again"
            if again
            else ""
        )
        print(f"warning: {what}; {then}{cells}", file=sys.stderr)
        if exited:
            self._mps = self._mps.restart()
        return again

    def _died(self, w: _Worker, folder: Folder, progress) -> None:
        cell, w.cell = w.cell, None
        record = folder.record_since(cell.run_id, w.since)
        if record is None:
            reason = (
                f"the worker process running this cell died ({ended(w.process.exitcode)}); it "
                "may have run out of memory or been killed"
            )
            record = worker.failed_record(cell.spec, reason, threads=w.slot.threads)
            folder.write(record)
        folder.release(cell.run_id)
        progress.finished(cell, record.status)  # it may have died after writing its record

    def _run_inline(self, cells, folder, progress, claim) -> list[str]:
        slot = self.slots[0]
        worker.set_threads(slot.threads)
        if slot.gpu is not None:
            import torch

            torch.cuda.set_device(slot.gpu)
        ran = []
        for cell in cells:
            if not claim(cell):
                continue
            progress.started(cell)
            try:
                status = worker.execute_cell(cell, folder.path, progress.callback(cell), self.log)
            finally:
                folder.release(cell.run_id)
            ran.append(cell.run_id)
            progress.finished(cell, status)
        return ran


def gpu_slots(gpus: list[int], runs_per_gpu: int) -> list[Slot]:
    return [Slot(g, None) for _ in range(runs_per_gpu) for g in gpus]


def default_runs_per_gpu(gpus: list[int], memory_gib: float) -> int:
    """As many runs as fit in the free memory of the fullest GPU, at most 4."""
    from bench_cli.environment import gpu_free_bytes

    free = min(gpu_free_bytes(gpus)) / 2**30
    return max(1, min(4, int(free * 0.9 // max(memory_gib, 0.1))))


def cpu_slots(jobs: int, threads: int | None = None) -> list[Slot]:
    from bench_cli.environment import default_threads

    return [Slot(None, threads or default_threads(jobs)) for _ in range(jobs)]
