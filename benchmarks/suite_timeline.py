"""Where one ``bench`` command's wall clock goes, process by process: the coordinator's start-up
(Python, ``import torch``, planning), the fork server's (``import torch`` and the run loop's
modules, once), each worker's (forked from it, or a fresh interpreter importing torch under
spawn; the task's data and CUDA context), each cell's run loop (the first in a worker apart from
the later ones, which run warm), and the end (the pool's close, the exit). ``timeline/sitecustomize.py``
writes the events; nothing in ``bench`` is changed.

    python benchmarks/suite_timeline.py run one.log -- suite run s.yaml --out o1 --gpus 0 -q
    python benchmarks/suite_timeline.py show one.log two.log
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from statistics import mean

HOOK = Path(__file__).resolve().parent / "timeline"


def run(log: Path, args: list[str]) -> float:
    """Run ``python -m bench_cli ARGS`` with the hook; its wall clock, also written to the log."""
    log.unlink(missing_ok=True)
    path = os.pathsep.join(filter(None, [str(HOOK), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "TIMELINE_LOG": str(log)}
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "bench_cli", *args], env=env, check=True)
    t1 = time.time()
    with open(log, "a") as f:
        f.write(f"0 0 command> {t0:.3f}\n0 0 command< {t1:.3f}\n")
    return t1 - t0


def summary(log: Path) -> dict:
    """Seconds from the command's start: the coordinator's milestones, the workers' (min-max),
    the run loops' durations (first in each worker, later ones) and the end."""
    procs: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for line in log.read_text().splitlines():
        pid, _, name, t = line.split()
        procs[pid].append((name, float(t)))
    command = dict(procs.pop("0", []))
    t0 = command.get("command>")
    starts = {pid: dict(ev).get("start", min(t for _, t in ev)) for pid, ev in procs.items()}
    t0 = t0 or min(starts.values())
    coordinator = min(starts, key=starts.get)

    def first(pid: str, name: str) -> float | None:
        return next((t - t0 for n, t in procs[pid] if n == name), None)

    def loops(pid: str) -> list[float]:
        ends = [t for n, t in procs[pid] if n == "runloop<"]
        return [b - a for a, b in zip([t for n, t in procs[pid] if n == "runloop>"], ends)]

    workers = [p for p in procs if p != coordinator and loops(p)]
    servers = [p for p in procs if p != coordinator and p not in workers]
    out = {
        "coordinator_torch_imported": first(coordinator, "torch<"),
        "forkserver_torch_imported": [first(p, "torch<") for p in servers if first(p, "torch<")],
        "dynamo_imported": [t for p in procs if (t := first(p, "torch._dynamo<")) is not None],
        "plan_done": first(coordinator, "plan<"),
        "first_spawn": first(coordinator, "spawn>"),
        "workers": len(workers),
        "close_start": first(coordinator, "close>"),
        "close_end": first(coordinator, "close<"),
        "coordinator_exit": first(coordinator, "exit"),
        "command_end": command["command<"] - t0 if "command<" in command else None,
    }
    if workers:
        spans = {
            "worker_serves": [first(w, "serve>") for w in workers],
            "first_cell": [first(w, "runloop>") for w in workers],
        }
        out.update({k: [min(v), max(v)] for k, v in spans.items()})
        firsts = [loops(w)[0] for w in workers]
        later = [d for w in workers for d in loops(w)[1:]]
        out["first_cell_seconds"] = [min(firsts), mean(firsts), max(firsts)]
        out["later_cell_seconds"] = [min(later), mean(later), max(later)] if later else None
        out["last_cell_end"] = max(t - t0 for w in workers for n, t in procs[w] if n == "runloop<")
    return out


def show(logs: list[Path]) -> dict:
    res = {}
    for log in logs:
        res[log.stem] = s = summary(log)
        print(f"== {log.stem}: {s['workers']} workers, command {s['command_end'] or 0:.2f} s")
        for k, v in s.items():
            if isinstance(v, list):
                v = " / ".join(f"{x:.2f}" for x in v)
            elif isinstance(v, float):
                v = f"{v:.2f}"
            print(f"  {k:28s} {v}")
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    r = sub.add_parser("run", help="run a bench command with the hook, then show its timeline")
    r.add_argument("log", type=Path)
    r.add_argument("args", nargs=argparse.REMAINDER, help="-- and the bench command's arguments")
    s = sub.add_parser("show", help="the timelines of logs already written")
    s.add_argument("logs", type=Path, nargs="+")
    s.add_argument("--json", type=Path, help="also write the summaries here")
    a = p.parse_args()
    if a.what == "run":
        run(a.log, a.args[1:] if a.args[:1] == ["--"] else a.args)
        show([a.log])
    else:
        res = show(a.logs)
        if a.json:
            a.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
