"""The Ray executor: each cell is a Ray task with the resources it needs.

A fraction of a GPU per cell when ``runs_per_gpu`` is above 1 (so Ray packs that many on one
GPU), else one GPU; on a CPU, ``threads`` CPUs (default 1). A local Ray by default, an existing
cluster with ``ray_address``. Workers report their step through a Ray queue, so progress
streams back to the terminal. A task whose worker dies becomes an ``error`` record.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from typing import Any

from bench_cli.addresses import TIMEOUT, unanswered
from bench_cli.errors import BenchError, ConfigError, Terminated
from bench_cli.folder import Folder
from bench_cli.plan import Cell


def ray_module():
    """Ray, or one error line that names the extra to install."""
    try:
        import ray
    except ImportError:
        raise BenchError(
            'the ray executor needs Ray; install it with: pip install "bench-cli[ray]"'
        ) from None
    return ray


def check_address(address: str) -> None:
    """Refuse at once a cluster address where nothing answers: ``ray.init`` would retry it for
    minutes. ``auto`` (the cluster this machine has joined) is looked up as ``ray.init`` does."""
    where = "--ray-address (or executor.ray_address in a suite file)"
    if address == "auto":
        from ray._private.services import canonicalize_bootstrap_address_or_die

        try:
            canonicalize_bootstrap_address_or_die(address)
        except ConnectionError:
            raise BenchError(
                f"{where} auto: no Ray cluster runs on this machine (none started with `ray "
                "start`, no RAY_ADDRESS); start one, give its HOST:PORT, or leave the address "
                "out for a local Ray"
            ) from None
        return
    if address == "local":
        return
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"{where} {address}: give the head's HOST:PORT (as `ray start --head` prints it), "
            "ray://HOST:PORT, or auto"
        )
    if why := unanswered(host, int(port)):
        raise BenchError(
            f"{where} {address}: nothing answers at {host}:{port} ({why}); start the cluster's "
            "head there (ray start --head), or leave the address out for a local Ray"
        )
    if not speaks_grpc(host, int(port)):  # a web server, say: ray.init would wait minutes
        raise BenchError(
            f"{where} {address}: {host}:{port} answers, but not as a Ray cluster does (no "
            f"gRPC within {TIMEOUT:g} s); give the address that `ray start --head` printed, or "
            "leave it out for a local Ray"
        )


def speaks_grpc(host: str, port: int) -> bool:
    """Whether a gRPC server answers at ``host:port`` within ``TIMEOUT`` seconds: a Ray head's
    GCS and its client server both are (grpcio comes with Ray)."""
    import grpc

    channel = grpc.insecure_channel(f"{host}:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
        return True
    except grpc.FutureTimeoutError:
        return False
    finally:
        channel.close()


def _run_cell(cell: Cell, out: str, log: dict | None, threads: int, queue: Any) -> str:
    """The body of one Ray task (runs in a Ray worker; imports there)."""
    from bench_cli.executors import worker

    worker.set_threads(threads)
    events = worker.Events(queue.put_nowait, cell.run_id, cell.spec.settings.steps)
    return worker.execute_cell(cell, out, events, log)


@contextlib.contextmanager
def _sigterm_between_calls(handler):
    """While Ray is used: ``ray.init`` puts a SIGTERM handler of its own (an exit, or an abort)
    in place of ``handler``, the command's, and an exception that a handler raises inside a Ray
    call comes out as ``SystemExit(1)``. So SIGTERM is only noted here, and the caller calls the
    function yielded between Ray's calls, which runs ``handler`` then (the command stops as it
    does with the local executor). ``handler`` is put back at the end."""
    received: list[int] = []
    main = threading.current_thread() is threading.main_thread()

    def noting(signum, frame) -> None:
        received.append(signum)

    if main and handler is not None:
        signal.signal(signal.SIGTERM, noting)

    def check() -> None:
        if not received:
            return
        signum = received.pop()
        if callable(handler):
            handler(signum, None)
        else:  # the default action, or none if it was ignored
            signal.signal(signal.SIGTERM, handler)
            signal.raise_signal(signum)

    try:
        yield check
        check()  # one that came during the last of Ray's calls
    finally:  # unless the handler changed it meanwhile (the command's: a second SIGTERM kills)
        if main and handler is not None and signal.getsignal(signal.SIGTERM) is noting:
            signal.signal(signal.SIGTERM, handler)


class RayExecutor:
    def __init__(self, settings, log: dict | None = None):
        self.settings, self.log = settings, log
        self.ray = ray_module()

    def _resources(self, cells: list[Cell]) -> dict[str, float]:
        on_gpu = any(c.spec.settings.device in ("auto", "cuda") for c in cells) and bool(
            self.ray.cluster_resources().get("GPU", 0)
        )
        if on_gpu:
            return {"num_gpus": 1.0 / (self.settings.runs_per_gpu or 1), "num_cpus": 1}
        return {"num_gpus": 0, "num_cpus": self.settings.threads or 1}

    def run(self, cells: list[Cell], folder: Folder, progress, claim) -> list[str]:
        ray = self.ray
        handler = signal.getsignal(signal.SIGTERM)
        if not ray.is_initialized():
            try:
                if address := self.settings.ray_address:
                    try:
                        ray.init(address=address, log_to_driver=False)
                    except ConnectionError as exc:  # "auto" with no cluster on this machine
                        raise BenchError(f"--ray-address {address}: {exc}") from None
                else:
                    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
            except SystemExit as exc:  # SIGTERM while ray.init runs: its handler exits
                if exc.code != signal.SIGTERM:
                    raise
                raise Terminated(128 + signal.SIGTERM) from None
        with _sigterm_between_calls(handler) as sigterm:
            return self._run(cells, folder, progress, claim, sigterm)

    def _run(self, cells, folder, progress, claim, sigterm) -> list[str]:
        ray = self.ray
        from ray.util.queue import Empty, Queue

        queue = Queue()
        resources = self._resources(cells)
        threads = int(resources["num_cpus"])
        task = ray.remote(max_retries=0)(_run_cell).options(**resources)
        pending: dict[Any, Cell] = {}
        since = time.time()  # a record from before is not its run's (--rerun replaces it)
        for cell in cells:
            if claim(cell):
                pending[task.remote(cell, str(folder.path), self.log, threads, queue)] = cell
                progress.started(cell)
        ran = []
        try:
            while pending:
                sigterm()
                done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                try:
                    for _kind, run_id, step, total in queue.get_nowait_batch(queue.qsize()):
                        progress.step(run_id, step, total)
                except Empty:
                    pass
                progress.tick()
                for ref in done:
                    cell = pending.pop(ref)
                    try:
                        status = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        status = "error"
                        if folder.record_since(cell.run_id, since) is None:
                            from bench_cli.executors.worker import failed_record

                            reason = f"the Ray task running this cell failed: {type(exc).__name__}"
                            folder.write(failed_record(cell.spec, reason))
                    folder.release(cell.run_id)
                    ran.append(cell.run_id)
                    progress.finished(cell, status)
        finally:
            for ref, cell in pending.items():
                ray.cancel(ref, force=True)
                folder.release(cell.run_id)
            queue.shutdown()
        return ran
