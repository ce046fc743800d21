"""Where the local executor's workers come from: a fork server, a process that imports torch and
the run loop once, and forks each worker from itself, so that a worker starts in a fraction of a
second with all of that loaded, instead of a fresh interpreter importing it for seconds.
``spawn`` where there is no fork server.

The fork server starts with the first worker, or earlier through ``prestart``: the command line
calls it before it imports torch itself, so that the two imports overlap. It lives as long as the
process that started it. This module imports neither torch nor the rest of the executors.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys

#: what the fork server imports once (none of it starts CUDA, which a fork would break). Not
#: ``torch._dynamo`` (1-2 s, which every worker would wait for): the project's optimizers do not
#: load it, and a run that does (``--compile``, DDP, a plug-in built on torch's optimizers) loads
#: it in its worker.
PRELOAD = [
    "torch",
    "bench_cli.executors.worker",
    "bench_cli.api",
    "bench_cli.runner",
]


def _runs_a_script() -> bool:
    """Whether a worker would first run this process's ``__main__`` file again, as
    multiprocessing does so that what the file defines can be unpickled: a library user's script.
    A forked worker runs it before it can set its own environment, so module-level CUDA calls in
    the script would not see the worker's GPU and MPS pipes; a spawned worker starts with them.
    (``python -m``, an interactive session and the ``bench`` command, which runs as
    ``bench_cli.__main__``, are not such scripts.)"""
    main = sys.modules.get("__main__")
    return getattr(main, "__spec__", None) is None and getattr(main, "__file__", None) is not None


def context():
    """The multiprocessing context that starts workers."""
    if "forkserver" not in mp.get_all_start_methods() or _runs_a_script():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def prestart(settings, device: str | None) -> None:
    """Called by the command line: start the fork server now when the command will likely start
    local workers (several CPU jobs, or runs on an NVIDIA GPU, ``/dev/nvidiactl``, unless the
    settings ask for one run on one GPU). ``device``: the runs' device, if given. Not on a
    ``torchrun`` rank (``WORLD_SIZE`` above 1), whose runs train in the rank's own process."""
    if settings.kind != "local" or context().get_start_method() != "forkserver":
        return
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return
    one_slot = settings.runs_per_gpu == 1 and settings.gpus is not None and len(settings.gpus) < 2
    gpu = device != "cpu" and os.path.exists("/dev/nvidiactl") and not one_slot
    if settings.jobs > 1 or gpu:
        from multiprocessing import forkserver

        # the fork server starts with SIGINT ignored: a Ctrl-C while it imports is the
        # command's to handle (its workers ignore SIGINT too)
        handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            forkserver.ensure_running()
        finally:
            signal.signal(signal.SIGINT, handler)
