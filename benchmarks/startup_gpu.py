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

from executors_gpu import gpt2_ddp  # the sibling script (this folder is on sys.path)


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
    res.update(gpt2_ddp(args.out, steps=200, train_tokens=40_000_000))
    print(json.dumps(res, indent=1))
    (args.out / "startup.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
