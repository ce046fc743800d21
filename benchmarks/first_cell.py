"""Why a worker's first cell takes longer than its later ones (figures in PERFORMANCE.md).

One process does what a local worker does: it imports what the fork server preloads, makes its
CUDA context, prepares ``lm-medium`` and trains three cells one after another (seeds 0-2), then
prints each cell's wall clock, its record's set-up, training and evaluation seconds, and the
modules the cell imported first. ``--profile``: each of the first two cells under cProfile (its
25 most expensive functions). ``--triton-first``: import the fast path's Triton kernels and
compute Triton's hashes before the first cell, as a fork server could.

    python benchmarks/first_cell.py --data tinyshakespeare.txt --steps 600
    python benchmarks/first_cell.py --data tinyshakespeare.txt --steps 100 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time


def triton_first() -> None:
    import triton
    from triton.runtime import cache

    from bench_cli.registry import _fast_kernels

    cache.triton_key()  # Triton's hash of its own files: the key of its kernel cache
    for kernel in vars(_fast_kernels).values():
        if isinstance(kernel, triton.runtime.jit.JITFunction):
            kernel.cache_key  # noqa: B018 - computes and keeps the kernel's source hash


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--device", default="cuda")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--triton-first", action="store_true")
    args = p.parse_args()

    t = time.perf_counter()
    import torch

    from bench_cli import api
    from bench_cli.executors import worker
    from bench_cli.runner import run

    print(f"imports {time.perf_counter() - t:.2f} s", flush=True)
    req = api.RunRequest(
        task="lm-medium",
        optimizers=["adamw"],
        task_options={"data": args.data},
        settings={"steps": args.steps, "eval_interval": max(1, args.steps // 2)},
        device=args.device,
    )
    specs = []
    for seed in (0, 1, 2):
        req.seed = seed
        specs += api.plan_runs(req)[1]
    if args.triton_first:
        t = time.perf_counter()
        triton_first()
        print(f"Triton first {time.perf_counter() - t:.2f} s", flush=True)
    t = time.perf_counter()
    torch.zeros(1, device=args.device)
    print(f"context {time.perf_counter() - t:.2f} s", flush=True)
    t = time.perf_counter()
    task, device = worker._prepared(specs[0])
    print(f"prepare {time.perf_counter() - t:.2f} s", flush=True)
    loaded = set(sys.modules)
    for i, spec in enumerate(specs):
        profiler = cProfile.Profile() if args.profile and i < 2 else None
        t = time.perf_counter()
        if profiler:
            profiler.enable()
        rec = run(spec, task, device)
        if profiler:
            profiler.disable()
        wall = time.perf_counter() - t
        new = sorted(set(sys.modules) - loaded)
        loaded = set(sys.modules)
        tops = sorted({m.split(".")[0] for m in new})
        print(
            f"cell {i}: wall {wall:.2f} s, set-up {rec.setup_seconds:.2f}, training "
            f"{rec.train_seconds:.2f}, evaluation {rec.eval_seconds:.2f} ({rec.status}); "
            f"{len(new)} modules imported first: {' '.join(tops)}",
            flush=True,
        )
        if profiler:
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
            print(out.getvalue())


if __name__ == "__main__":
    main()
