"""GPU measurements of the executors (figures in PERFORMANCE.md).

Part ``pool``: a suite of 16 ``lm-medium`` cells of 600 steps, run with ``--runs-per-gpu 1`` and
twice with ``--runs-per-gpu 4`` (under MPS, the default when runs share a GPU) on one GPU: wall
clock of each, each cell's losses compared between 1 and 4 (same seeds, same run ids) and
between the two runs of 4 (the GPU's own run-to-run difference), and the per-cell overhead of
a warm process: the wall clock of ``--runs-per-gpu 1`` less the cells' training and evaluation
seconds, over the cells (an upper bound: the command's own start-up is in it, and each cell's
set-up: model, optimizer, first step).
Part ``multi``: the same suite on two GPUs against one (``--runs-per-gpu 4``; after a warm-up,
``--repeat`` times in alternating order), and ``lm-gpt2``
(GPT-2 small) on generated token shards with DDP on two GPUs against one GPU at the same global
batch (tokens/s from the records); ``--timeline``: each suite under ``suite_timeline.py``, which
adds where its seconds went, process by process. Part ``gpt2``: that comparison alone
(``--gpt2-compile``: both runs with ``--compile``).

    python benchmarks/executors_gpu.py pool --data tinyshakespeare.txt --out results/
    python benchmarks/executors_gpu.py multi --data tinyshakespeare.txt --out results/
    python benchmarks/executors_gpu.py multi --data ... --out ... --repeat 2 --timeline --gpt2-batch
    python benchmarks/executors_gpu.py gpt2 --data tinyshakespeare.txt --out results/ --gpt2-compile
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import suite_timeline  # the sibling script (this folder is on sys.path)

SUITE = """
name: pool16
seeds: [{seeds}]
device: cuda
tasks:
  - name: lm-medium
    options: {{data: {data}}}
    budget: {{steps: {steps}, eval_interval: {interval}}}
optimizers:
  - name: adamw
"""


def bench(*args: str, env: dict | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "bench_cli", *args], check=True, env={**os.environ, **(env or {})}
    )
    return time.perf_counter() - t0


def timed_suite(suite: Path, out: Path, *extra: str, timeline: bool = False) -> dict:
    """Wall clock of one ``bench suite run`` and where it went: from the command to the first
    cell's start (``head``), and from the last cell's end to the command's exit (``tail``), from
    the records' timestamps (whole seconds, so each is within about 1 s). ``timeline``: run it
    under ``suite_timeline.py`` and add its summary (``out``.log), to the hundredth of a second."""
    args = ("suite", "run", str(suite), "--out", str(out), "--quiet", *extra)
    start = time.time()
    if timeline:
        log = out.with_suffix(".log")
        wall = suite_timeline.run(log, list(args))
    else:
        wall = bench(*args)
    end = start + wall
    recs = records(out).values()
    first = min(datetime.fromisoformat(r["started_at"]).timestamp() for r in recs)
    last = max(datetime.fromisoformat(r["finished_at"]).timestamp() for r in recs)
    res = {"wall": wall, "head": first - start, "tail": end - last}
    return {**res, "timeline": suite_timeline.summary(log)} if timeline else res


def records(folder: Path) -> dict[str, dict]:
    out = {}
    for p in folder.glob("*.json"):
        if p.name in ("environment.json", "calibration.json", "selection.json"):
            continue
        r = json.loads(p.read_text())
        out[r["run_id"]] = r
    return out


def max_loss_difference(a: dict, b: dict) -> float:
    worst = 0.0
    for k in a:
        for pa, pb in zip(a[k]["curve"], b[k]["curve"]):
            for m in ("val_loss", "train_loss"):
                if m in pa["metrics"]:
                    worst = max(worst, abs(pa["metrics"][m] - pb["metrics"][m]))
    return worst


def write_suite(args) -> Path:
    suite = args.out / "pool16.yaml"
    seeds = ", ".join(map(str, range(16)))
    suite.write_text(SUITE.format(seeds=seeds, data=args.data, steps=600, interval=300))
    return suite


def pool(args) -> dict:
    suite = write_suite(args)
    warm_up(args, "0")
    res = {}
    for name, k in (("rpg1", "1"), ("rpg4", "4"), ("rpg4_again", "4")):
        t = timed_suite(suite, args.out / name, "--gpus", "0", "--runs-per-gpu", k)
        res[name], res[f"{name}_head"], res[f"{name}_tail"] = t["wall"], t["head"], t["tail"]
        print(name, t, flush=True)
    one, four = records(args.out / "rpg1"), records(args.out / "rpg4")
    res["same_run_ids"] = sorted(one) == sorted(four)
    res["max_abs_loss_difference_rpg1_rpg4"] = max_loss_difference(one, four)
    res["max_abs_loss_difference_rpg4_rpg4"] = max_loss_difference(
        four, records(args.out / "rpg4_again")
    )
    res["speedup_rpg4"] = res["rpg1"] / res["rpg4"]
    res["speedup_rpg4_again"] = res["rpg1"] / res["rpg4_again"]
    busy = sum(r["train_seconds"] + r["eval_seconds"] for r in one.values())
    res["per_cell_overhead_upper_bound_s"] = (res["rpg1"] - busy) / len(one)
    res["mean_setup_seconds_rpg1"] = sum(r["setup_seconds"] for r in one.values()) / len(one)
    res["train_tokens_per_second_rpg1"] = sum(r["tokens_per_second"] for r in one.values()) / 16
    return res


def warm_up(args, gpus: str) -> None:
    """A short suite on the GPUs first, so that no measured suite pays a fresh machine's
    one-time costs (the bytecode cache's first fill, the driver's first MPS start)."""
    suite = args.out / "warm.yaml"
    seeds = "100, 101, 102, 103"
    suite.write_text(SUITE.format(seeds=seeds, data=args.data, steps=50, interval=50))
    timed_suite(suite, args.out / "warm", "--gpus", gpus, "--runs-per-gpu", "2")


def multi(args) -> dict:
    """The suite on one GPU and on two (``--runs-per-gpu 4``), after a warm-up, ``--repeat``
    times in alternating order (one, two, two, one, ...); the speedup of each pair and of the
    medians."""
    suite = write_suite(args)
    warm_up(args, "0,1")
    res: dict = {"one_gpu": [], "two_gpus": []}
    for rep in range(args.repeat):
        order = (("one_gpu", "0"), ("two_gpus", "0,1"))
        for name, gpus in order if rep % 2 == 0 else order[::-1]:
            t = timed_suite(
                suite,
                args.out / f"{name}_{rep}",
                *("--gpus", gpus, "--runs-per-gpu", "4"),
                timeline=args.timeline,
            )
            res[name].append(t)
            print(name, rep, t, flush=True)
    one = sorted(t["wall"] for t in res["one_gpu"])
    two = sorted(t["wall"] for t in res["two_gpus"])
    res["speedup_each"] = [a["wall"] / b["wall"] for a, b in zip(res["one_gpu"], res["two_gpus"])]
    res["speedup_two_gpus"] = one[len(one) // 2] / two[len(two) // 2]
    return {**res, **gpt2(args)}


def gpt2(args) -> dict:
    res = {}
    for batch in args.gpt2_batch:
        ddp = gpt2_ddp(
            args.out / f"gpt2_b{batch}", 60, 20_000_000, batch, compiled=args.gpt2_compile
        )
        res.update({f"{k}_b{batch}": v for k, v in ddp.items()})
    return res


def gpt2_ddp(out: Path, steps: int, train_tokens: int, batch: int = 32, compiled=False) -> dict:
    """``lm-gpt2`` on generated token shards for ``steps`` steps, on one GPU and with DDP on
    two at the same global batch of ``batch`` sequences (the task's default is 32): tokens/s of
    each (from the records) and the final losses. ``compiled``: both with ``--compile``."""
    import numpy as np

    from bench_cli.tasks.lm.tokens import write_shard

    shards = out / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    write_shard(shards / "gen_train_000.bin", rng.integers(0, 50257, train_tokens, dtype=np.uint16))
    write_shard(shards / "gen_val_000.bin", rng.integers(0, 50257, 2_000_000, dtype=np.uint16))
    common = [
        "run", "--opt", "adamw", "--task", "lm-gpt2", "--data", str(shards), "--steps", str(steps),
        "--set", f"eval_interval={steps}", "--set", "eval_batches=4", "--set", f"batch_size={batch}",
        "--quiet", *(["--compile"] if compiled else []),
    ]  # fmt: skip
    bench(*common, "--out", str(out / "gpt2_one"), "--gpus", "0")
    t0 = time.perf_counter()
    ddp = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m"]
    subprocess.run([*ddp, "bench_cli", *common, "--out", str(out / "gpt2_ddp")], check=True)
    [one] = records(out / "gpt2_one").values()
    [two] = records(out / "gpt2_ddp").values()
    return {
        "ddp_wall": time.perf_counter() - t0,
        "gpt2_steps": steps,
        "gpt2_tokens_per_second_one_gpu": one["tokens_per_second"],
        "gpt2_tokens_per_second_ddp2": two["tokens_per_second"],
        "gpt2_ddp_speedup": two["tokens_per_second"] / one["tokens_per_second"],
        "gpt2_world_size": two["env"]["world_size"],
        "gpt2_final_loss_one": one["final_metrics"].get("val_loss"),
        "gpt2_final_loss_ddp": two["final_metrics"].get("val_loss"),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("part", choices=["pool", "multi", "gpt2"])
    p.add_argument("--data", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--gpt2-batch",
        type=int,
        nargs="*",
        default=[32],
        help="global batches for lm-gpt2 DDP (none: skip it)",
    )
    p.add_argument("--gpt2-compile", action="store_true", help="lm-gpt2 with --compile")
    p.add_argument("--repeat", type=int, default=1, help="multi: how many times each suite runs")
    p.add_argument(
        "--timeline", action="store_true", help="multi: where each suite's time goes, by process"
    )
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    res = {"pool": pool, "multi": multi, "gpt2": gpt2}[args.part](args)
    import torch

    res["device"] = torch.cuda.get_device_name(0)
    res["torch"] = torch.__version__
    print(json.dumps(res, indent=1))
    (args.out / f"executors_{args.part}.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
