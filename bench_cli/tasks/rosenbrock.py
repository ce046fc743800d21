"""The 2-D Rosenbrock valley, the deterministic toy on which AdEMAMix motivates its method."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import torch
from torch import nn

from bench_cli.results.record import Target
from bench_cli.tasks import TASKS
from bench_cli.tasks.base import Task, TaskOptions


class RosenbrockOptions(TaskOptions):
    PRESETS = {"default": {}, "tiny": {}}

    a: float = 1.0
    b: float = 100.0
    x0: float = -1.2
    y0: float = 1.0


class _Point(nn.Module):
    def __init__(self, x0: float, y0: float):
        super().__init__()
        # a single 2-D point stored as shape (2,), like the paper's toy
        self.xy = nn.Parameter(torch.tensor([x0, y0], dtype=torch.float64))


@TASKS.register("rosenbrock")
class Rosenbrock(Task):
    r"""f(x, y) = (a - x)^2 + b (y - x^2)^2, from (x0, y0) = (-1.2, 1.0); minimum 0 at (a, a^2).

    Metrics: ``distance`` (Euclidean distance to the optimum; the target) and ``gap`` (f - f*).
    Deterministic: every "batch" is the same function, so seeds change nothing. Unit: steps.
    The parameter is one tensor of shape (2,), in float64.
    """

    Options = RosenbrockOptions
    unit = "steps"
    metric_directions = {"distance": "min", "gap": "min", "loss": "min"}
    SETTINGS = {
        "default": dict(
            steps=3000,
            warmup_steps=0,
            schedule="constant",
            grad_clip=None,
            eval_interval=50,
            log_interval=50,
        ),
        "tiny": dict(
            steps=200,
            warmup_steps=0,
            schedule="constant",
            grad_clip=None,
            eval_interval=20,
            log_interval=20,
        ),
    }
    BASELINE = dict(lr=3e-2, betas=(0.9, 0.999), weight_decay=0.0)
    TARGETS = {
        "default": Target(metric="distance", value=1e-2, direction="min"),
        "tiny": Target(metric="distance", value=1.0, direction="min"),
    }

    @property
    def units_per_step(self) -> int:
        return 1

    def build_model(self) -> nn.Module:
        return _Point(self.options.x0, self.options.y0)

    def param_groups(self, model: nn.Module) -> list[dict]:
        # the decision variable is not a weight matrix: never decayed
        return [{"name": "point", "params": [model.xy], "weight_decay": 0.0}]

    def _value(self, xy: torch.Tensor) -> torch.Tensor:
        a, b = self.options.a, self.options.b
        x, y = xy[0], xy[1]
        return (a - x) ** 2 + b * (y - x**2) ** 2

    def batches(self, seed: int) -> Iterator[None]:
        return itertools.repeat(None)

    def loss(self, model: nn.Module, batch: None) -> torch.Tensor:
        return self._value(model.xy)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        a = self.options.a
        x, y = (float(v) for v in model.xy.detach().cpu())
        gap = float(self._value(model.xy.detach()))
        return {"distance": math.hypot(x - a, y - a * a), "gap": gap, "loss": gap}
