"""Wall clock of one ``bench`` command in two or more checkouts of the project, run in turn
(A, B, A, B, ...) so that both see the same machine load; figures in PERFORMANCE.md.

    git worktree add /tmp/before <rev>
    python benchmarks/suite_wall.py --checkout /tmp/before --checkout . --repeat 2 -- \\
        suite run suites/ci-smoke.yaml --jobs 2 --quiet

Each run writes into a fresh temporary folder (``--out`` is added), so nothing is reused.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--checkout", action="append", required=True, type=Path)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("bench", nargs=argparse.REMAINDER)
    args = p.parse_args()
    command = [a for a in args.bench if a != "--"]
    walls: dict[str, list[float]] = {str(c): [] for c in args.checkout}
    for _ in range(args.repeat):
        for checkout in args.checkout:
            with tempfile.TemporaryDirectory() as out:
                env = {**os.environ, "PYTHONPATH": str(checkout.resolve())}
                t0 = time.perf_counter()
                subprocess.run(
                    [sys.executable, "-m", "bench_cli", *command, "--out", out],
                    cwd=checkout,
                    env=env,
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
                walls[str(checkout)].append(time.perf_counter() - t0)
    medians = {k: statistics.median(v) for k, v in walls.items()}
    first = medians[str(args.checkout[0])]
    print(json.dumps({"walls": walls, "median": medians}, indent=1))
    for k, m in medians.items():
        print(f"{k}: median {m:.2f} s, {first / m:.2f}x the first")


if __name__ == "__main__":
    main()
