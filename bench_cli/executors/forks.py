"""Where the local executor's workers come from: a fork server, a process that imports torch,
``torch._dynamo`` (which the first optimizer would import) and the run loop once, and forks each
worker from itself, so that a worker starts in a fraction of a second with all of that loaded,
instead of a fresh interpreter importing it for seconds. ``spawn`` where there is no fork server.

The fork server starts with the first worker, or earlier through ``prestart``: the command line
calls it before it imports torch itself, so that the two imports overlap. This module imports
neither torch nor the rest of the executors.
"""

from __future__ import annotations

import multiprocessing as mp
import os

#: what the fork server imports once (none of it starts CUDA, which a fork would break)
PRELOAD = [
    "torch",
    "torch._dynamo",
    "bench_cli.executors.worker",
    "bench_cli.api",
    "bench_cli.runner",
]


def context():
    """The multiprocessing context that starts workers."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def prestart(settings) -> None:
    """Start the fork server now when the command will likely start local workers: several CPU
    jobs, or an NVIDIA GPU (``/dev/nvidiactl``) unless the settings ask for one run on one GPU."""
    if settings.kind != "local" or "forkserver" not in mp.get_all_start_methods():
        return
    one_slot = settings.runs_per_gpu == 1 and settings.gpus is not None and len(settings.gpus) < 2
    if settings.jobs > 1 or (os.path.exists("/dev/nvidiactl") and not one_slot):
        from multiprocessing import forkserver

        context()
        forkserver.ensure_running()
