"""The CUDA fast path's launch shape, measured: for each (chunk, block, warps) every optimizer's
step on GPT-2 small's parameters, as wall-clock ms per step (steps issued back to back, one
synchronisation), the GPU time of its kernels alone (torch.profiler), and the host time to issue
one step. The bound and torch's fused AdamW are measured in the same run.

    python benchmarks/fast_path_shapes.py --out shapes.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from bench_cli import perf
from bench_cli.registry import OPTIMIZERS, _fast


def measure(opt, iters: int) -> dict:
    for _ in range(3):
        opt.step()
    torch.cuda.synchronize()
    walls, hosts = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(iters):
            opt.step()
        hosts.append((time.perf_counter() - t0) / iters)
        torch.cuda.synchronize()
        walls.append((time.perf_counter() - t0) / iters)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            opt.step()
        torch.cuda.synchronize()
    kernel_us = sum(e.self_device_time_total for e in prof.key_averages()) / iters
    walls.sort()
    hosts.sort()
    return {"wall_ms": walls[1] * 1e3, "kernel_ms": kernel_us / 1e3, "host_ms": hosts[1] * 1e3}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--chunks", default="2048,8192,16384,65536")
    p.add_argument("--blocks", default="1024,2048,4096")
    p.add_argument("--warps", default="4,8")
    p.add_argument("--names", default=",".join(OPTIMIZERS.names()))
    args = p.parse_args()
    device = torch.device("cuda")
    shapes = perf.gpt2_shapes()
    numel = sum(torch.Size(s).numel() for s in shapes)
    res = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "copy_bandwidth_tb_s": perf.copy_bandwidth(device, numel) / 1e12,
        "torch_fused_adamw": measure(
            perf.random_optimizer(perf.TORCH_ADAMW, {"fused": True}, shapes, device), args.iters
        ),
        "rows": [],
    }
    print(json.dumps({k: v for k, v in res.items() if k != "rows"}), flush=True)
    opts = {
        name: perf.random_optimizer(name, {"fused": True}, shapes, device)
        for name in args.names.split(",")
    }
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    for chunk, block, warps in itertools.product(
        ints(args.chunks), ints(args.blocks), ints(args.warps)
    ):
        if chunk % block:  # the fast path needs whole blocks in a chunk
            continue
        _fast.CONFIG.update(chunk=chunk, block=block, num_warps=warps)
        for name, opt in opts.items():
            row = {
                "optimizer": name,
                "chunk": chunk,
                "block": block,
                "warps": warps,
                **measure(opt, args.iters),
            }
            res["rows"].append(row)
            print(json.dumps(row), flush=True)
    args.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
