"""Validation windows drawn at random against stratified ones, on one trained model.

Trains a text LM task's model with AdamW for ``--steps`` steps (the task's lr, warm-up and cosine
decay; no evaluation on the way), then estimates its validation loss twice with the same number
of windows: independent random starts with the standard deviation over the square root of their
number (the design before), and one start per stratum with the collapsed-strata standard error
(``bench_cli/tasks/lm/sampling.py``, what the tasks do now); and once more over a census of every
``--census-stride``-th start, as a reference value.

    python benchmarks/eval_sampling.py --task lm-small --steps 2000 --data tinyshakespeare.txt
    python benchmarks/eval_sampling.py --task lm-small --steps 2000 --data tinyshakespeare.txt \
        --set block_size=256 --set eval_batches=512    # lm-medium's 6,144 windows of 256
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from bench_cli import api
from bench_cli.registry import build_optimizer
from bench_cli.runner import lr_multiplier


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--task", default="lm-small")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--data", default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--census-stride", type=int, default=8)
    p.add_argument("--set", dest="sets", action="append", default=[], help="as for bench run")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    req = api.RunRequest(
        task=args.task, optimizers=["adamw"], steps=args.steps, data=args.data, sets=args.sets
    )
    task, [spec] = api.plan_runs(req)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    task.prepare(device)
    torch.manual_seed(0)
    model = task.build_model().to(device)
    opt = build_optimizer("adamw", task.param_groups(model), **spec.hparams)
    s = spec.settings
    t0, stream = time.perf_counter(), task.batches(0)
    for step in range(s.steps):
        for g in opt.param_groups:
            g["lr"] = spec.hparams["lr"] * lr_multiplier(step, s, True, True)
        task.loss(model, next(stream)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    train_s = time.perf_counter() - t0
    model.eval()
    n = len(task.eval_starts)
    gen = torch.Generator().manual_seed(1337)
    with torch.no_grad():
        strat = task.evaluate(model)

        def losses(starts):
            return torch.cat(
                [task.window_losses(model, task.val.batch(c)) for c in starts.split(512)]
            )

        rand = losses(torch.randint(task.val.n_starts, (n,), generator=gen))
        census = losses(torch.arange(0, task.val.n_starts, args.census_stride))
    out = {
        "task": args.task,
        "steps": s.steps,
        "train_seconds": train_s,
        "windows": n,
        "val_starts": task.val.n_starts,
        "stratified": {"val_loss": strat["val_loss"], "se": strat["val_loss_se"]},
        "random": {"val_loss": float(rand.mean()), "se": float(rand.std() / math.sqrt(n))},
        f"census_every_{args.census_stride}": float(census.mean()),
        "window_loss_sd": float(rand.std()),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
