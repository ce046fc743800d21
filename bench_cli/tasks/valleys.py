"""Valleys with a known optimum: Rosenbrock in 2-D and chained, the noisy quadratic model, a river.

``rosenbrock`` is the paper's deterministic 2-D toy, one point ``xy``. The others' "model" is one
float64 vector ``x`` (a single tensor, so a thousand steps take about
a second on a CPU). Gradient noise, where there is any, is drawn per step from a generator seeded
with the run's seed and enters the loss as the linear term ``<n, x>`` with ``n`` detached, so the
gradient is exactly ``grad f(x) + n``. Metrics: ``gap`` (f(x) - f*, noise-free; the target),
``distance`` (||x - x*||) and ``loss`` (= gap). Unit: steps. No weight decay.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import torch
from pydantic import Field
from torch import nn

from bench_cli.results.record import Target
from bench_cli.tasks import TASKS
from bench_cli.tasks.base import Preset, Task, TaskOptions, run_settings


class _Vector(nn.Module):
    def __init__(self, x0: torch.Tensor):
        super().__init__()
        self.x = nn.Parameter(x0.clone().to(torch.float64))


def _settings(steps: int, eval_interval: int, schedule: str = "cosine") -> dict:
    return run_settings(steps, eval_interval, schedule=schedule, min_lr_ratio=0.01, grad_clip=None)


def _preset(steps: int, interval: int, gap: float, **options) -> Preset:
    return Preset(_settings(steps, interval), Target(metric="gap", value=gap), options)


# -- rosenbrock ------------------------------------------------------------------------------------


class RosenbrockOptions(TaskOptions):
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
    metric_directions = {"distance": "min", "gap": "min", "loss": "min"}
    distributed = False  # its loss reads the point itself; no batch to split
    BASELINE = dict(lr=3e-2, betas=(0.9, 0.999), weight_decay=0.0)
    PRESETS = {
        name: Preset(
            run_settings(
                steps, 50 if name == "default" else 20, schedule="constant", grad_clip=None
            ),
            Target(metric="distance", value=value),
        )
        for name, steps, value in (("default", 3000, 1e-2), ("tiny", 200, 1.0))
    }
    units_per_step = 1
    seed_independent = True
    memory_gib = 0.5

    def build_model(self) -> nn.Module:
        return _Point(self.options.x0, self.options.y0)

    def param_groups(self, model: nn.Module) -> list[dict]:
        # the decision variable is not a weight matrix: never decayed
        return [{"name": "point", "params": [model.xy], "weight_decay": 0.0}]

    def _value(self, xy: torch.Tensor) -> torch.Tensor:
        a, b = self.options.a, self.options.b
        return (a - xy[0]) ** 2 + b * (xy[1] - xy[0] ** 2) ** 2

    def batches(self, seed: int) -> Iterator[None]:
        return itertools.repeat(None)

    def loss(self, model: nn.Module, batch: None) -> torch.Tensor:
        return self._value(model.xy)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        a = self.options.a
        x, y = (float(v) for v in model.xy.detach().cpu())
        gap = float(self._value(model.xy.detach()))
        return {"distance": math.hypot(x - a, y - a * a), "gap": gap, "loss": gap}


class _Valley(Task):
    """A deterministic objective ``f`` with minimiser ``x*`` and value ``f* = 0``, plus noise."""

    unit = "steps"
    metric_directions = {"gap": "min", "distance": "min", "loss": "min"}
    units_per_step = 1
    memory_gib = 0.5
    distributed = False  # its loss reads the point itself; no batch to split

    def prepare(self, device: torch.device) -> None:
        self.device = device

    @property
    def seed_independent(self) -> bool:
        """Without gradient noise nothing depends on the seed."""
        return self.noise() is None

    # -- what each valley defines ---------------------------------------------------------------

    def start(self) -> torch.Tensor:
        """The starting point x0 (float64)."""
        raise NotImplementedError

    def optimum(self) -> torch.Tensor:
        """The minimiser x* (float64), where f = 0."""
        raise NotImplementedError

    def value(self, x: torch.Tensor) -> torch.Tensor:
        """The noise-free objective f(x) >= 0."""
        raise NotImplementedError

    def noise(self) -> tuple[tuple[int, ...], torch.Tensor] | None:
        """The gradient noise as (shape, scale): n = scale * xi with xi ~ N(0, I) of that shape
        (scale broadcasts to the shape of x); None when the gradient is exact."""
        return None

    # -- the Task interface ---------------------------------------------------------------------

    def build_model(self) -> nn.Module:
        return _Vector(self.start())

    def param_groups(self, model: nn.Module) -> list[dict]:
        # the decision variable is not a weight matrix: never decayed
        return [{"name": "x", "params": [model.x], "weight_decay": 0.0}]

    def batches(self, seed: int) -> Iterator[torch.Tensor | None]:
        """Per step, the gradient noise n (drawn from ``seed`` alone), or None without noise."""
        model = self.noise()
        if model is None:
            return itertools.repeat(None)
        return self._noise_stream(seed, *model)

    def _noise_stream(
        self, seed: int, shape: tuple[int, ...], scale: torch.Tensor
    ) -> Iterator[torch.Tensor]:
        device = getattr(self, "device", torch.device("cpu"))
        gen = torch.Generator().manual_seed(seed)
        while True:
            xi = torch.randn(shape, generator=gen, dtype=torch.float64)
            yield (scale * xi).to(device)

    def loss(self, model: nn.Module, batch: torch.Tensor | None) -> torch.Tensor:
        f = self.value(model.x)
        if batch is None:
            return f
        return f + (batch * model.x).sum()  # gradient: grad f + n

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        x = model.x.detach()
        gap = float(self.value(x))
        distance = float(torch.linalg.vector_norm(x - self.optimum().to(x.device)))
        return {"gap": gap, "distance": distance, "loss": gap}


# -- rosenbrock-nd ---------------------------------------------------------------------------------


class RosenbrockNDOptions(TaskOptions):
    dim: int = Field(100, ge=2, description="N, the number of coordinates")
    a: float = 1.0
    b: float = Field(100.0, gt=0.0)
    noise: float = Field(0.0, ge=0.0, description="std of the Gaussian noise added to each grad")


@TASKS.register("rosenbrock-nd")
class RosenbrockND(_Valley):
    r"""The chained N-dimensional Rosenbrock valley, optionally with gradient noise.

    f(x) = sum_{i=1}^{N-1} [ b (x_{i+1} - x_i^2)^2 + (a - x_i)^2 ], minimum 0 at x = (a, ..., a).
    Start: x_i = -1.2 for odd i and 1.0 for even i (1-based), the classic extended start.
    Defaults: N = 100, a = 1, b = 100, noise 0 (``--set noise=S`` adds N(0, S^2) to every
    gradient coordinate, drawn per step from the run's seed). Metrics: gap = f(x) (the target),
    distance = ||x - a||. Unit: steps; 2,000 steps (the chain needs them: the valley floor is
    reached coordinate by coordinate), cosine decay to 1% of the peak lr.
    """

    Options = RosenbrockNDOptions
    BASELINE = dict(lr=2e-1, betas=(0.9, 0.99), weight_decay=0.0)
    PRESETS = {"default": _preset(2000, 50, 1e-3), "tiny": _preset(100, 20, 20.0, dim=10)}

    def start(self) -> torch.Tensor:
        x0 = torch.ones(self.options.dim, dtype=torch.float64)
        x0[0::2] = -1.2
        return x0

    def optimum(self) -> torch.Tensor:
        return torch.full((self.options.dim,), self.options.a, dtype=torch.float64)

    def value(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.options.a, self.options.b
        head, tail = x[:-1], x[1:]
        return (b * (tail - head * head) ** 2 + (a - head) ** 2).sum()

    def noise(self) -> tuple[tuple[int, ...], torch.Tensor] | None:
        o = self.options
        return None if o.noise == 0.0 else ((o.dim,), torch.tensor(o.noise, dtype=torch.float64))


# -- noisy-quadratic -------------------------------------------------------------------------------


class NoisyQuadraticOptions(TaskOptions):
    dim: int = Field(1000, ge=1, description="d, the number of coordinates")
    power: float = Field(1.0, ge=0.0, description="p in h_i = i^-p")
    batch_size: int = Field(16, ge=1, description="B: the noise variance is h_i / B")
    noise: float = Field(1.0, ge=0.0, description="c: noise covariance c * H / B (0: none)")


@TASKS.register("noisy-quadratic")
class NoisyQuadratic(_Valley):
    r"""The noisy quadratic model of Zhang et al. (2019): batch-size effects in seconds.

    From "Which algorithmic choices matter at which batch sizes?" (NeurIPS 2019).

    f(x) = 1/2 sum_{i=1}^{d} h_i x_i^2 with h_i = i^{-p}; minimum 0 at x* = 0; start x = 1.
    A step's gradient is h * x + n with n ~ N(0, c * diag(h) / B): the curvature spectrum and the
    noise covariance are both H, as in the paper, and the noise shrinks as 1/B with the batch
    size B. Defaults: d = 1000, p = 1, B = 16, c = 1. Metrics: gap = f(x) (the target),
    distance = ||x||. Unit: steps (one step is one batch of B samples); 1,000 steps, cosine decay
    to 1% of the peak lr.
    """

    Options = NoisyQuadraticOptions
    BASELINE = dict(lr=3e-2, betas=(0.9, 0.999), weight_decay=0.0)
    PRESETS = {"default": _preset(1000, 50, 1e-1), "tiny": _preset(100, 20, 0.5, dim=100)}

    def __init__(self, options: NoisyQuadraticOptions):
        super().__init__(options)
        i = torch.arange(1, options.dim + 1, dtype=torch.float64)
        self.h = i ** (-options.power)  # the curvature spectrum, also the noise covariance

    def start(self) -> torch.Tensor:
        return torch.ones(self.options.dim, dtype=torch.float64)

    def optimum(self) -> torch.Tensor:
        return torch.zeros(self.options.dim, dtype=torch.float64)

    def value(self, x: torch.Tensor) -> torch.Tensor:
        h = self.h.to(x.device)
        return 0.5 * (h * x * x).sum()

    def noise(self) -> tuple[tuple[int, ...], torch.Tensor] | None:
        o = self.options
        if o.noise == 0.0:
            return None
        return (o.dim,), (o.noise * self.h / o.batch_size).sqrt()


# -- river-valley ----------------------------------------------------------------------------------


class RiverValleyOptions(TaskOptions):
    rivers: int = Field(16, ge=1, description="m, independent 2-D valleys side by side")
    steepness: float = Field(100.0, gt=0.0, description="kappa, curvature across the valley")
    slope: float = Field(1.0, gt=0.0, description="epsilon, slope along the river far upstream")
    width: float = Field(1.0, gt=0.0, description="delta, where the slope turns quadratic")
    angle: float = Field(30.0, ge=0.0, le=90.0, description="theta, the river's angle to x_1 (deg)")
    length: float = Field(10.0, ge=0.0, description="L: the start is u = -L, upstream")
    noise: float = Field(5.0, ge=0.0, description="sigma: gradient-noise std across the valley")


@TASKS.register("river-valley")
class RiverValley(_Valley):
    r"""A river valley (Wen et al. 2024): steep, noisy walls and a slow, shallow river.

    The picture of "Understanding Warmup-Stable-Decay Learning Rates: A River Valley Loss
    Landscape Perspective"; a slow momentum should help along the river.

    x holds m independent 2-D valleys, one per row of an (m, 2) tensor. In each, the river runs
    at angle theta to the first axis: u = cos(theta) x_1 + sin(theta) x_2 (along) and
    w = -sin(theta) x_1 + cos(theta) x_2 (across), and
    f(x) = sum_i [ kappa/2 w_i^2 + epsilon delta (sqrt(1 + (u_i / delta)^2) - 1) ].
    Across: curvature kappa, and all the gradient noise, N(0, sigma^2) along the across direction.
    Along: slope epsilon (constant upstream, quadratic within delta of the mouth), noise-free.
    The river is not aligned with the axes, so a per-coordinate preconditioner (Adam's) leaks the
    across noise into the along direction. Minimum 0 at x = 0. Start: u = -L, w = 1 (one unit up
    the wall). Defaults: m = 16, kappa = 100, epsilon = 1, delta = 1, theta = 30 degrees, L = 10,
    sigma = 5. Metrics: gap = f(x) (the target), distance = ||x||. Unit: steps; 1,000 steps,
    cosine decay to 1% of the peak lr.
    """

    Options = RiverValleyOptions
    BASELINE = dict(lr=3e-1, betas=(0.9, 0.999), weight_decay=0.0)
    PRESETS = {
        "default": _preset(1000, 50, 1.0),
        "tiny": _preset(100, 20, 5.0, rivers=4, length=2.0),
    }

    def __init__(self, options: RiverValleyOptions):
        super().__init__(options)
        theta = math.radians(options.angle)
        # unit vectors along (t) and across (n) the river
        self.t = torch.tensor([math.cos(theta), math.sin(theta)], dtype=torch.float64)
        self.n = torch.tensor([-math.sin(theta), math.cos(theta)], dtype=torch.float64)

    def start(self) -> torch.Tensor:
        o = self.options
        return (-o.length * self.t + self.n).expand(o.rivers, 2).clone()

    def optimum(self) -> torch.Tensor:
        return torch.zeros(self.options.rivers, 2, dtype=torch.float64)

    def value(self, x: torch.Tensor) -> torch.Tensor:
        o = self.options
        u, w = x @ self.t.to(x.device), x @ self.n.to(x.device)
        hill = 0.5 * o.steepness * w * w
        river = o.slope * o.width * (torch.sqrt(1.0 + (u / o.width) ** 2) - 1.0)
        return (hill + river).sum()

    def noise(self) -> tuple[tuple[int, ...], torch.Tensor] | None:
        o = self.options
        if o.noise == 0.0:
            return None
        return (o.rivers, 1), o.noise * self.n  # one draw per river, along its across direction
