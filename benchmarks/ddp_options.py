"""``bench`` under ``torchrun`` with DistributedDataParallel options other than the run loop's,
to measure what they change (tokens/s in the record):

    torchrun --nproc-per-node 2 benchmarks/ddp_options.py static_graph=1,bucket_cap_mb=100 \\
        run --opt adamw --task lm-gpt2 --data SHARDS --steps 200 --out DIR

The first argument is a comma-separated list of KEY=VALUE (integers, or 0/1 for flags) handed
to every DistributedDataParallel the run builds; the rest is a ``bench`` command line.
"""

from __future__ import annotations

import functools
import sys

import torch

from bench_cli.cli import main


def options(text: str) -> dict:
    out = {}
    for item in filter(None, text.split(",")):
        key, value = item.split("=")
        out[key] = bool(int(value)) if key in ("static_graph", "broadcast_buffers") else int(value)
    return out


if __name__ == "__main__":
    extra = options(sys.argv[1])
    ddp = torch.nn.parallel.DistributedDataParallel
    ddp.__init__ = functools.partialmethod(ddp.__init__, **extra)
    sys.argv = [sys.argv[0], *sys.argv[2:]]
    main()
