"""Loaded by every Python process whose ``PYTHONPATH`` starts with this folder (see
``benchmarks/suite_timeline.py``): appends ``pid ppid event unix-time`` lines to ``$TIMELINE_LOG``
at the interpreter's start, around its first imports of the modules in ``TRACED``, around the calls named in
``WATCHED`` (once their module has loaded) and at exit. It changes nothing else."""

from __future__ import annotations

import atexit
import builtins
import functools
import os
import sys
import time

LOG = os.environ.get("TIMELINE_LOG")

#: module -> (attribute path, event name): each call gives ``name>`` and ``name<``
WATCHED = {
    "bench_cli.executors.worker": [("_prepared", "prepare"), ("execute_cell", "cell")],
    "bench_cli.executors.local": [
        ("LocalExecutor._start", "spawn"),
        ("LocalExecutor.close", "close"),
        ("_serve", "serve"),
    ],
    "bench_cli.executors.mps": [("_start_control_daemon", "mps")],
    "bench_cli.runner": [("run", "runloop")],
    "bench_cli.plan": [("build_plan", "plan")],
}


def event(name: str) -> None:
    if LOG:
        with open(LOG, "a") as f:
            f.write(f"{os.getpid()} {os.getppid()} {name} {time.time():.3f}\n")


def _timed(f, name):
    @functools.wraps(f)
    def g(*a, **k):
        event(name + ">")
        try:
            return f(*a, **k)
        finally:
            event(name + "<")

    return g


_patched: set[str] = set()


def _patch() -> None:
    for module, targets in WATCHED.items():
        m = sys.modules.get(module)
        if module in _patched or m is None:
            continue
        owners = []
        for path, _ in targets:
            owner = m
            *parents, attr = path.split(".")
            for p in parents:
                owner = getattr(owner, p, None)
            owners.append((owner, attr))
        if not all(o is not None and hasattr(o, a) for o, a in owners):
            continue  # still importing
        _patched.add(module)
        for (owner, attr), (_, name) in zip(owners, targets):
            setattr(owner, attr, _timed(getattr(owner, attr), name))


_import = builtins.__import__
#: modules whose first import gives ``name>`` and ``name<`` (the fork server preloads them)
TRACED = {"torch", "torch._dynamo", "bench_cli.cli"}
_seen: set[str] = set()


def _traced_import(name, *args, **kwargs):
    first = name in TRACED and name not in _seen and name not in sys.modules
    if first:
        _seen.add(name)
        event(name + ">")
    try:
        return _import(name, *args, **kwargs)
    finally:
        if first:
            event(name + "<")
        if len(_patched) < len(WATCHED):
            _patch()


if LOG:
    event("start")
    builtins.__import__ = _traced_import
    atexit.register(event, "exit")
