"""Plug-in tasks for the executor tests (loaded by path, in workers too).

``killer-quadratic``: the run of seed 1 kills its own process at its 5th step, as a crash or an
out-of-memory kill would. ``counted-quadratic``: every run appends a line to the file named by
``$BENCH_TEST_COUNT`` (its process id, and the value of the variable that
``$BENCH_TEST_ENV`` names, if any) and takes a little time per step, so that concurrent coordinators overlap;
``stalled-quadratic`` counts its run and then spends ten minutes building its model;
``big-quadratic`` counts its run and declares a memory need of 8 GiB.
"""

from __future__ import annotations

import os
import signal
import time

from bench_cli.tasks import TASKS
from bench_cli.tasks.valleys import NoisyQuadratic


@TASKS.register("killer-quadratic")
class KillerQuadratic(NoisyQuadratic):
    """The noisy quadratic; seed 1 dies at step 5."""

    def batches(self, seed: int):
        self._seed, self._steps = seed, 0
        return super().batches(seed)

    def loss(self, model, batch):
        self._steps += 1
        if self._seed == 1 and self._steps == 5:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().loss(model, batch)


@TASKS.register("counted-quadratic")
class CountedQuadratic(NoisyQuadratic):
    """The noisy quadratic, counting its runs."""

    def build_model(self):
        extra = os.environ.get(os.environ.get("BENCH_TEST_ENV", ""), "")
        with open(os.environ["BENCH_TEST_COUNT"], "a") as fh:
            fh.write(f"{os.getpid()} {extra}".rstrip() + "\n")
        return super().build_model()

    def loss(self, model, batch):
        time.sleep(0.01)
        return super().loss(model, batch)


@TASKS.register("big-quadratic")
class BigQuadratic(CountedQuadratic):
    """The counted quadratic, declaring that a run needs 8 GiB of GPU memory."""

    memory_gib = 8.0


@TASKS.register("stalled-quadratic")
class StalledQuadratic(CountedQuadratic):
    """The counted quadratic, whose model takes ten minutes to build: a run that sends no
    progress for a long time, as a large task's set-up does."""

    def build_model(self):
        model = super().build_model()
        time.sleep(600)
        return model


from bench_cli.registry import OPTIMIZERS  # noqa: E402
from bench_cli.registry.adamw import AdamW  # noqa: E402


@OPTIMIZERS.register("saving-adamw")
class SavingAdamW(AdamW):
    """AdamW that saves its parameters after every step to ``$BENCH_TEST_PARAMS/rank<R>.pt``
    (so a test can compare the final parameters of every DDP rank)."""

    def step(self, closure=None):
        import torch

        out = super().step(closure)
        params = [p.detach().clone() for g in self.param_groups for p in g["params"]]
        rank = os.environ.get("RANK", "0")
        torch.save(params, os.path.join(os.environ["BENCH_TEST_PARAMS"], f"rank{rank}.pt"))
        return out
