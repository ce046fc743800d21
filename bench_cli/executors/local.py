"""The local executor: a pool of worker processes on this machine.

On CUDA, ``runs_per_gpu`` workers per visible GPU (each sees one GPU through
``CUDA_VISIBLE_DEVICES``); on a CPU, ``jobs`` workers, each with ``cores // jobs`` threads. A worker
starts when a cell is first claimed for it, lives through every phase of the command and keeps
each task's prepared data between cells. A worker that dies (killed, crashed, out of host memory)
leaves an ``error`` record for its cell naming the reason, and a new worker takes its place. With
one worker, or one cell and no worker started yet, the cells run in this process (no start-up of
a second process).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_cli.errors import BenchError
from bench_cli.executors import worker
from bench_cli.folder import Folder
from bench_cli.plan import Cell


@dataclass(frozen=True)
class Slot:
    """Where one worker runs: a GPU (or none) and its CPU threads."""

    gpu: int | None
    threads: int | None


@contextmanager
def _environ(**values: str | None):
    old = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _die_with(parent: int | None) -> None:
    """Have the kernel stop this worker when its coordinator ``parent`` dies, however it dies
    (Linux): a coordinator killed with SIGKILL must not leave workers training on. Elsewhere, or
    when the worker is not the coordinator's own child (``parent`` None: a start method other
    than spawn), only the progress events notice (``worker.Events``), at a run's next step."""
    if parent is None:
        return
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the request was made
        os._exit(1)


def _serve(inbox, outbox, threads: int | None, log: dict | None, parent: int | None) -> None:
    """A worker process: run the cells it is sent until it gets None."""
    _die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the coordinator handles Ctrl-C
    worker.set_threads(threads)
    while True:
        item = inbox.get()
        if item is None:
            return
        cell, out = item
        events = worker.Events(outbox.put, cell.run_id, cell.spec.settings.steps)
        try:
            status = worker.execute_cell(cell, out, events, log)
            outbox.put(("end", cell.run_id, status, None))
        except BaseException as exc:  # noqa: BLE001 - reported to the coordinator, not lost
            outbox.put(("end", cell.run_id, "fail", f"{type(exc).__name__}: {exc}"))


@dataclass
class _Worker:
    slot: Slot
    process: Any
    inbox: Any
    cell: Cell | None = None


def use_mps(asked: bool | None, slots: list[Slot]) -> bool:
    """MPS when asked; by default when runs share a GPU and NVIDIA's MPS control is installed
    (without it, processes on one GPU are time-sliced and run about a third slower together)."""
    gpus = [s.gpu for s in slots if s.gpu is not None]
    if asked is not None:
        return asked and bool(gpus)
    return len(gpus) > len(set(gpus)) and shutil.which("nvidia-cuda-mps-control") is not None


def _control(command: str, env: dict, timeout: float = 30) -> int:
    """One command to the MPS control daemon through its client; the client's exit code."""
    done = subprocess.run(
        ["nvidia-cuda-mps-control"],
        input=command + "\n",
        text=True,
        env=env,
        timeout=timeout,
        capture_output=True,
    )
    return done.returncode


def _start_control_daemon(env: dict, log: Path, wait: float = 30) -> subprocess.Popen:
    """The MPS control daemon in the foreground, as this process's child, once it answers. On
    Linux it gets SIGTERM when this process dies however it dies (``setpriv --pdeathsig``), so a
    coordinator killed with SIGKILL leaves no daemon behind; ``-d`` would detach it for good.
    Its own session keeps a terminal's Ctrl-C for the coordinator, which stops it last. If it
    does not answer within ``wait`` seconds, or the wait is interrupted, it is stopped."""
    cmd = ["nvidia-cuda-mps-control", "-f"]
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    if setpriv:
        cmd = [setpriv, "--pdeathsig", "TERM", *cmd]
    with open(log, "wb") as err:
        daemon = subprocess.Popen(
            cmd, env=env, stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True
        )
    deadline = time.monotonic() + wait
    try:
        while daemon.poll() is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.SubprocessError(f"it did not answer within {wait:g} s")
            try:  # a CUDA context made once it answers uses it
                if _control("get_server_list", env, timeout=left) == 0:
                    return daemon
            except subprocess.TimeoutExpired:
                continue  # the deadline decides
            time.sleep(0.05)
    except BaseException:  # not answering, Ctrl-C, SIGTERM: no daemon is left running
        daemon.kill()
        daemon.wait()
        raise
    detail = log.read_text(errors="replace").strip().splitlines()
    raise subprocess.SubprocessError(
        f"exit code {daemon.returncode}" + (f": {detail[-1]}" if detail else "")
    )


@contextmanager
def mps_daemon(required: bool = True):
    """NVIDIA's Multi-Process Service for this executor's workers: its own pipe and log folders
    (so it never touches another user's daemon), stopped when the pool closes. When it cannot
    start: an error if it was asked for, else one warning and the runs go on time-sliced."""
    pipes = Path(tempfile.mkdtemp(prefix="bench-mps-"))
    mps = {
        "CUDA_MPS_PIPE_DIRECTORY": str(pipes / "pipe"),
        "CUDA_MPS_LOG_DIRECTORY": str(pipes / "log"),
    }
    for d in mps.values():
        Path(d).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **mps}
    failure = daemon = None
    try:
        daemon = _start_control_daemon(env, pipes / "control.out")
    except (OSError, subprocess.SubprocessError) as exc:
        failure = f"cannot start the CUDA MPS daemon (nvidia-cuda-mps-control: {exc})"
    except BaseException:  # interrupted while it started: its folder goes with it
        shutil.rmtree(pipes, ignore_errors=True)
        raise
    if failure is not None:  # outside the except block: the runs' own errors stay unchained
        shutil.rmtree(pipes, ignore_errors=True)
        if required:
            raise BenchError(f"{failure}; run with --no-mps")
        print(f"warning: {failure}; the runs sharing a GPU are time-sliced", file=sys.stderr)
        yield
        return
    try:
        with _environ(**mps):
            yield
    finally:
        try:
            _control("quit", env)
            daemon.wait(timeout=30)
        except (OSError, subprocess.SubprocessError):
            daemon.kill()  # a daemon that will not quit must not hide the runs' own outcome
            daemon.wait()
        shutil.rmtree(pipes, ignore_errors=True)


@dataclass
class LocalExecutor:
    """A pool of workers, one per slot, each started when a cell is first claimed for it. The
    workers, their prepared data and the MPS daemon stay from one ``run`` to the next (the
    phases of a suite) until ``close``."""

    slots: list[Slot]
    log: dict | None = None
    mps: bool | None = None
    ctx: Any = field(default_factory=lambda: mp.get_context("spawn"))
    _workers: list[_Worker | None] = field(default_factory=list, init=False)
    _outbox: Any = field(default=None, init=False)
    _daemon: ExitStack = field(default_factory=ExitStack, init=False)
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
            self._outbox = self.ctx.Queue()
        workers = self._workers
        todo = list(cells)
        ran: list[str] = []
        while True:
            for i in range(len(workers)):
                while (workers[i] is None or workers[i].cell is None) and todo:
                    cell = todo.pop(0)
                    if claim(cell):
                        try:
                            w = workers[i] = self._ready(i)
                        except BaseException:
                            folder.release(cell.run_id)  # never started: free to run later
                            raise
                        w.cell = cell
                        w.inbox.put((cell, str(folder.path)))
                        progress.started(cell)
            busy = {w.cell.run_id: w for w in workers if w is not None and w.cell is not None}
            if not busy:
                return ran
            try:
                kind, run_id, *rest = self._outbox.get(timeout=1.0)
            except queue.Empty:
                kind, run_id, rest = None, None, []
            if run_id not in busy:
                pass  # no message, or one from a worker that died before it was read
            elif kind in ("start", "step"):
                progress.step(run_id, rest[0], rest[1])
            elif kind == "end":
                w = busy[run_id]
                cell, w.cell = w.cell, None
                folder.release(cell.run_id)
                if rest[0] == "fail":
                    raise BenchError(f"{cell.spec.task_id} {cell.spec.optimizer}: {rest[1]}")
                ran.append(cell.run_id)
                progress.finished(cell, rest[0])
            for i, w in enumerate(workers):
                if w is not None and w.cell is not None and not w.process.is_alive():
                    ran.append(w.cell.run_id)
                    self._died(w, folder, progress)
                    workers[i] = None  # a new worker takes the slot's next cell

    def _ready(self, i: int) -> _Worker:
        """Slot ``i``'s idle worker, started now if it has none or its worker has died."""
        w = self._workers[i]
        if w is not None and w.process.is_alive():
            return w
        if not self._started and use_mps(self.mps, self.slots):  # before the pool's first worker
            self._daemon.enter_context(mps_daemon(required=bool(self.mps)))
        self._started = True
        return self._start(self.slots[i], self._outbox)

    def close(self) -> None:
        """Stop the pool. Idle workers are told to stop; busy ones only remain on the way out
        of an interruption (Ctrl-C, SIGTERM) or a failure, so their cells stop now: their claims
        read as interrupted, and a rerun takes them over (from a checkpoint when there is one).
        Then the MPS daemon, once no worker is left."""
        workers = [w for w in self._workers if w is not None]
        self._workers = []
        for w in workers:
            if w.process.is_alive():
                if w.cell is None:
                    w.inbox.put(None)
                else:
                    w.process.terminate()
        deadline = time.monotonic() + 5
        for w in workers:
            w.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if w.process.is_alive():
                w.process.kill()
        self._daemon.close()
        self._started = False

    def _start(self, slot: Slot, outbox) -> _Worker:
        inbox = self.ctx.Queue()
        gpu = str(slot.gpu) if slot.gpu is not None else None
        parent = os.getpid() if self.ctx.get_start_method() == "spawn" else None
        with _environ(
            CUDA_VISIBLE_DEVICES=gpu if gpu is not None else os.environ.get("CUDA_VISIBLE_DEVICES")
        ):
            p = self.ctx.Process(
                target=_serve,
                args=(inbox, outbox, slot.threads, self.log, parent),
                daemon=True,
            )
            p.start()
        return _Worker(slot, p, inbox)

    def _died(self, w: _Worker, folder: Folder, progress) -> None:
        cell, w.cell = w.cell, None
        code = w.process.exitcode
        how = (
            f"killed by signal {signal.Signals(-code).name}"
            if code is not None and code < 0
            else f"exit code {code}"
        )
        record = folder.record(cell.run_id)
        if record is None:
            reason = (
                f"the worker process running this cell died ({how}); it may have run out of "
                "memory or been killed"
            )
            record = worker.failed_record(cell.spec, reason)
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
    import torch

    free = min(torch.cuda.mem_get_info(g)[0] for g in gpus) / 2**30
    return max(1, min(4, int(free * 0.9 // max(memory_gib, 0.1))))


def cpu_slots(jobs: int, threads: int | None = None) -> list[Slot]:
    from bench_cli.environment import default_threads

    return [Slot(None, threads or default_threads(jobs)) for _ in range(jobs)]
