"""`bench data shards --jobs N` against `--jobs 1`: the same sources tokenized with each, in
alternating rounds, in one process (figures in PERFORMANCE.md). Checks that both builds give the
same shards.

    python benchmarks/shards_jobs.py /usr/lib/python3.11 --glob '*.py' --jobs 2 --rounds 3

GPT-2's BPE needs tiktoken and its ranks (offline: TIKTOKEN_CACHE_DIR).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from bench_cli.shards import build_shards


def build(sources: list[str], glob: str, tokenizer: str, jobs: int) -> tuple[float, dict]:
    out = Path(tempfile.mkdtemp(prefix="shards-"))
    try:
        t0 = time.perf_counter()
        manifest = build_shards(
            sources,
            out / "s",
            tokenizer=tokenizer,
            val_fraction=0.01,
            glob=glob,
            skip_undecodable=True,
            jobs=jobs,
        )
        return time.perf_counter() - t0, manifest
    finally:
        shutil.rmtree(out)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("sources", nargs="+")
    p.add_argument("--glob", default="*.py")
    p.add_argument("--tokenizer", default="gpt2")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    times: dict[int, list[float]] = {1: [], args.jobs: []}
    shards = {}
    for _ in range(args.rounds):
        for jobs in (1, args.jobs):
            seconds, manifest = build(args.sources, args.glob, args.tokenizer, jobs)
            times[jobs].append(seconds)
            shards[jobs] = [s["sha256"] for s in manifest["shards"]]
            print(f"jobs {jobs}: {seconds:.2f} s", flush=True)
    best = {j: min(t) for j, t in times.items()}
    print(
        json.dumps(
            {
                "tokens": manifest["train_tokens"] + manifest["val_tokens"],
                "source_bytes": sum(size for _, size in manifest["settings"]["files"]),
                "seconds": times,
                "best_seconds": best,
                "speedup": best[1] / best[args.jobs],
                "same_shards": shards[1] == shards[args.jobs],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
