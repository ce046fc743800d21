"""Does a GPU slow down when its neighbour is busy? (figures in PERFORMANCE.md)

Three loads, each run for a fixed time on GPU 0 alone and then on GPUs 0 and 1 at once (one
process per GPU, started together): ``matmul`` (bf16 8192 x 8192 products: arithmetic-bound),
``copy`` (device-to-device copies of 2 GiB: memory-bound) and ``launch`` (one-element adds:
bound by the host's kernel launches). Each process counts iterations over the same wall-clock
window; ``nvidia-smi`` samples the SM clock and power meanwhile. A ratio under 1 for ``pair``
against ``alone`` is a slowdown that no executor can remove.

    python benchmarks/gpu_pair.py --seconds 8
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

LOADS = ("matmul", "copy", "launch")


def pin_cpus(how: str, gpu: int) -> set[int] | None:
    """The CPUs a process driving ``gpu`` is pinned to: ``node``, every CPU of the GPU's NUMA
    node; ``core``, one physical core of that node (its hyperthreads), a different one per GPU;
    ``none``, no pinning."""
    if how == "none":
        return None
    query = ["nvidia-smi", "-i", str(gpu), "--query-gpu=pci.bus_id", "--format=csv,noheader"]
    bus = subprocess.check_output(query, text=True).strip().lower()[-12:]  # 0000:xx:yy.z
    node = max(0, int(open(f"/sys/bus/pci/devices/{bus}/numa_node").read()))
    text = open(f"/sys/devices/system/node/node{node}/cpulist").read().strip()
    cpus = sorted(
        c
        for part in text.split(",")
        for c in range(int(part.split("-")[0]), int(part.split("-")[-1]) + 1)
    )
    cpus = [c for c in cpus if c in os.sched_getaffinity(0)]
    if how == "node":
        return set(cpus)
    cores: list[set[int]] = []
    for c in cpus:
        path = f"/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list"
        sib = {int(x) for x in re.split("[,-]", open(path).read().strip())}
        if sib not in cores:
            cores.append(sib)
    return cores[(2 * gpu + 1) % len(cores)] & set(cpus)


def child(load: str, seconds: float, pin: str = "none", gpu: int = 0) -> None:
    import torch

    cpus = pin_cpus(pin, gpu)
    if cpus:
        os.sched_setaffinity(0, cpus)
        print(f"pinned to {sorted(cpus)}", file=sys.stderr, flush=True)

    dev = torch.device("cuda", 0)
    if load == "matmul":
        a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
        b = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)

        def step():
            return a @ b

        unit = 2 * 8192**3 / 1e12  # TFLOP per iteration
    elif load == "copy":
        src = torch.rand(2**29, device=dev)  # 2 GiB of float32
        dst = torch.empty_like(src)

        def step():
            return dst.copy_(src)

        unit = 2 * src.numel() * 4 / 1e12  # TB moved per iteration (read + write)
    else:
        x = torch.zeros(1, device=dev)

        def step():
            return x.add_(1.0)

        unit = 1e-6  # millions of launches per iteration
    for _ in range(20):  # warm-up: handles, clocks, caching allocator
        step()
    torch.cuda.synchronize()
    print("ready", flush=True)
    start_at = float(sys.stdin.readline())  # the same instant for every process
    while time.time() < start_at:
        time.sleep(0.001)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(10 if load != "launch" else 1000):
            step()
            n += 1
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    print(json.dumps({"rate": n * unit / elapsed}), flush=True)


def sample_clocks(gpus: str, seconds: float) -> subprocess.Popen:
    query = "index,clocks.sm,power.draw,temperature.gpu"
    return subprocess.Popen(
        ["nvidia-smi", "-i", gpus, f"--query-gpu={query}", "--format=csv,noheader,nounits",
         "-lms", "250"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip


def parse_clocks(text: str) -> dict[str, dict[str, float]]:
    per: dict[str, list[list[float]]] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        try:
            per.setdefault(parts[0], []).append([float(p) for p in parts[1:]])
        except ValueError:
            continue
    out = {}
    for gpu, rows in per.items():
        rows = rows[len(rows) // 4 : len(rows) - len(rows) // 4] or rows  # the middle half
        out[gpu] = {
            "sm_mhz": sum(r[0] for r in rows) / len(rows),
            "power_w": sum(r[1] for r in rows) / len(rows),
            "temp_c": max(r[2] for r in rows),
        }
    return out


def together(
    load: str, gpus: list[int], seconds: float, pin: str = "none"
) -> tuple[list[float], dict]:
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--child", load, "--seconds", str(seconds),
             "--pin", pin, "--gpu", str(g)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "CUDA_VISIBLE_DEVICES": str(g)},
        )  # fmt: skip
        for g in gpus
    ]
    for proc in procs:  # every process warmed up
        assert proc.stdout.readline().strip() == "ready"
    start_at = time.time() + 0.2
    for proc in procs:
        proc.stdin.write(f"{start_at}\n")
        proc.stdin.flush()
    while time.time() < start_at:
        time.sleep(0.01)
    smi = sample_clocks(",".join(map(str, gpus)), seconds)
    rates = [json.loads(p.communicate()[0].strip().splitlines()[-1])["rate"] for p in procs]
    smi.terminate()
    return rates, parse_clocks(smi.communicate()[0])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--loads", nargs="+", default=list(LOADS), choices=LOADS)
    p.add_argument("--child", choices=LOADS)
    p.add_argument("--pin", choices=["none", "node", "core"], default="none")
    p.add_argument("--gpu", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--out")
    args = p.parse_args()
    if args.child:
        child(args.child, args.seconds, args.pin, args.gpu)
        return
    units = {"matmul": "TFLOP/s", "copy": "TB/s", "launch": "M launches/s"}
    res = {}
    for load in args.loads:
        [alone], clocks_alone = together(load, [0], args.seconds, args.pin)
        pair, clocks_pair = together(load, [0, 1], args.seconds, args.pin)
        res[load] = {
            "unit": units[load], "alone": alone, "pair": pair,
            "pair_over_alone": [r / alone for r in pair],
            "clocks_alone": clocks_alone, "clocks_pair": clocks_pair,
        }  # fmt: skip
        print(json.dumps({load: res[load]}), flush=True)
    print(f"{'load':8} {'alone':>10} {'pair, GPU 0':>12} {'pair, GPU 1':>12} {'ratio':>6}  unit")
    for load, r in res.items():
        worst = min(r["pair_over_alone"])
        print(f"{load:8} {r['alone']:10.3f} {r['pair'][0]:12.3f} {r['pair'][1]:12.3f} "
              f"{worst:6.3f}  {r['unit']}")  # fmt: skip
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
