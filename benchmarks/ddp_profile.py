"""Where a training step's time goes, on one GPU or on each rank under DDP (torch.profiler over
steps ``--skip`` to ``--skip + --steps`` of a real ``bench run``):

    python benchmarks/ddp_profile.py --out DIR -- run --opt adamw --task lm-gpt2 --data SHARDS ...
    torchrun --nproc-per-node 2 benchmarks/ddp_profile.py --out DIR -- run ...

Writes ``profile_rank{R}.json`` per rank: wall milliseconds per step, the GPU's busy
milliseconds per step (the union of its kernels' intervals), its idle share, the milliseconds
of communication kernels (NCCL) and how many of them overlap no other kernel (exposed), and the
kernels that take the most time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, schedule

import bench_cli.runner as runner
from bench_cli.cli import main as bench_main


def union(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def summarise(prof, steps: int) -> dict:
    events = [
        e
        for e in prof.events()
        if e.device_type == torch.autograd.DeviceType.CUDA
        and not getattr(e, "is_user_annotation", False)  # ranges such as ProfilerStep#N
    ]
    kernels = [(e.time_range.start, e.time_range.end, e.name) for e in events]
    kernels = [k for k in kernels if k[1] > k[0]]
    if not kernels:
        return {"error": "no CUDA kernels recorded"}
    span = max(k[1] for k in kernels) - min(k[0] for k in kernels)
    busy = union([(a, b) for a, b, _ in kernels])
    comm = [(a, b) for a, b, n in kernels if "nccl" in n.lower()]
    other = [(a, b) for a, b, n in kernels if "nccl" not in n.lower()]
    exposed = union(comm + other) - union(other)
    table: dict[str, float] = {}
    for a, b, n in kernels:
        table[n[:90]] = table.get(n[:90], 0.0) + (b - a)
    top = sorted(table.items(), key=lambda kv: -kv[1])[:25]
    ms = 1e-3 / steps  # microseconds in total -> milliseconds per step
    return {
        "steps": steps,
        "span_ms_per_step": span * ms,
        "gpu_busy_ms_per_step": busy * ms,
        "gpu_idle_share": 1 - busy / span,
        "comm_ms_per_step": union(comm) * ms,
        "comm_exposed_ms_per_step": exposed * ms,
        "top_kernels_ms_per_step": {n: t * ms for n, t in top},
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--skip", type=int, default=20)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("bench", nargs=argparse.REMAINDER)
    args = p.parse_args()
    rank = int(os.environ.get("RANK", "0"))
    prof = profile(
        activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA],
        schedule=schedule(wait=args.skip, warmup=3, active=args.steps, repeat=1),
    )
    build = runner.build_optimizer

    def profiled(*a, **k):
        opt = build(*a, **k)
        step = opt.step

        def stepped(*sa, **sk):
            out = step(*sa, **sk)
            prof.step()
            return out

        opt.step = stepped
        return opt

    runner.build_optimizer = profiled
    sys.argv = [sys.argv[0], *[a for a in args.bench if a != "--"]]
    with prof:
        try:
            bench_main()
        except SystemExit as exc:
            if exc.code:
                raise
    args.out.mkdir(parents=True, exist_ok=True)
    res = summarise(prof, args.steps)
    (args.out / f"profile_rank{rank}.json").write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k != "top_kernels_ms_per_step"}))


if __name__ == "__main__":
    main()
