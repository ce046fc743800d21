"""Where a fresh process's start-up goes on the GPU machine: Python and torch imports, the CUDA
context, then `bench run` to its first step (the record's set-up seconds), and the DDP speedup of
GPT-2 small over more steps than ``executors_gpu.py multi``.

    python benchmarks/startup_gpu.py --data tinyshakespeare.txt --out results/
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def timed(*cmd: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(list(cmd), check=True, capture_output=True)
    return time.perf_counter() - t0


def record(folder: Path) -> dict:
    [p] = [p for p in folder.glob("*.json")]
    return json.loads(p.read_text())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    res = {
        "python": timed(py, "-c", "pass"),
        "import_torch": timed(py, "-c", "import torch"),
        "import_bench_cli": timed(py, "-c", "import bench_cli.cli"),
        "torch_cuda_context": timed(py, "-c", "import torch; torch.zeros(1, device='cuda')"),
    }
    run = [
        py,
        "-m",
        "bench_cli",
        "run",
        "--opt",
        "adamw",
        "--task",
        "lm-medium",
        "--data",
        args.data,
        "--steps",
        "20",
        "--set",
        "eval_interval=20",
        "--quiet",
    ]
    res["bench_run_20_steps"] = timed(*run, "--out", str(args.out / "lm"))
    r = record(args.out / "lm")
    res.update({k: r[k] for k in ("setup_seconds", "train_seconds", "eval_seconds")})
    print(json.dumps(res, indent=1), flush=True)
    import numpy as np

    from bench_cli.tasks.lm.tokens import write_shard

    shards = args.out / "shards"
    shards.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    write_shard(shards / "gen_train_000.bin", rng.integers(0, 50257, 40_000_000, dtype=np.uint16))
    write_shard(shards / "gen_val_000.bin", rng.integers(0, 50257, 2_000_000, dtype=np.uint16))
    common = [
        "run",
        "--opt",
        "adamw",
        "--task",
        "lm-gpt2",
        "--data",
        str(shards),
        "--steps",
        "200",
        "--set",
        "eval_interval=200",
        "--set",
        "eval_batches=4",
        "--quiet",
    ]
    subprocess.run(
        [py, "-m", "bench_cli", *common, "--out", str(args.out / "g1")],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            py,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "-m",
            "bench_cli",
            *common,
            "--out",
            str(args.out / "g2"),
        ],
        check=True,
        capture_output=True,
    )
    one, two = record(args.out / "g1"), record(args.out / "g2")
    res["gpt2_200_steps_tokens_per_second_one_gpu"] = one["tokens_per_second"]
    res["gpt2_200_steps_tokens_per_second_ddp2"] = two["tokens_per_second"]
    res["gpt2_ddp_speedup"] = two["tokens_per_second"] / one["tokens_per_second"]
    res["gpt2_val_loss_one_vs_ddp"] = [
        one["final_metrics"]["val_loss"],
        two["final_metrics"]["val_loss"],
    ]
    print(json.dumps(res, indent=1))
    (args.out / "startup.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
