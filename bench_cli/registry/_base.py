"""What every optimizer in the registry shares: declarations for the runner, validation, dispatch."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

# Measured with benchmarks/optimizer_step.py on a 2-core CPU: the foreach path is faster than the
# per-tensor loop for every optimizer here (fewer Python round trips), so it is the CPU default too.
FOREACH_ON_CPU = True


class OptimizerInfo:
    """Declarations the runner reads; it never guesses what an optimizer needs."""

    #: call ``.train()``/``.eval()`` next to the model's (Schedule-Free)
    has_train_eval_modes: ClassVar[bool] = False
    #: the optimizer warms up its own lr; the runner must not also warm up
    owns_warmup: ClassVar[bool] = False
    #: hyperparameters filled with the run's total number of steps when left as None
    horizon_hparams: ClassVar[tuple[str, ...]] = ()
    #: the run loop must supply the gradient of the next batch at the current point (MARS exact)
    needs_lookahead_grad: ClassVar[bool] = False
    #: the paper (and official code) this implementation follows
    paper: ClassVar[str] = ""
    #: state buffers, as a formula of the parameter size, for ``bench show``
    state_memory: ClassVar[str] = ""


def check(condition: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``condition`` holds."""
    if not condition:
        raise ValueError(message)


def check_lr(lr: Any) -> None:
    if isinstance(lr, Tensor):
        lr = lr.item()
    check(isinstance(lr, (int, float)) and lr >= 0.0, f"lr must be a number >= 0, got {lr!r}")


def check_beta(name: str, value: Any) -> None:
    check(
        isinstance(value, (int, float)) and 0.0 <= value < 1.0,
        f"{name} must be in [0, 1), got {value!r}",
    )


def check_betas(betas: Any, count: int) -> None:
    check(
        isinstance(betas, (tuple, list)) and len(betas) == count,
        f"betas must be a sequence of {count} numbers, got {betas!r}",
    )
    for i, beta in enumerate(betas):
        check_beta(f"betas[{i}]", beta)


def check_nonneg(name: str, value: Any) -> None:
    check(
        isinstance(value, (int, float)) and value >= 0.0 and math.isfinite(value),
        f"{name} must be a finite number >= 0, got {value!r}",
    )


def check_optional_steps(name: str, value: Any) -> None:
    check(
        value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 0),
        f"{name} must be None or an integer > 0, got {value!r}",
    )


def halflife_interpolation(beta_start: float, beta_end: float, t: int, horizon: int) -> float:
    """Momentum warmup that interpolates half-lives linearly (AdEMAMix's beta3 scheduler).

    h(b) = ln(0.5) / ln(b + 1e-8) - 1 is the half-life of an EMA with factor b, in steps, and
    h^-1(x) = 0.5^(1/(x+1)). For t < T: h^-1((1 - t/T) h(beta_start) + (t/T) h(beta_end)).
    The 1e-8 keeps ln(0) finite for beta_start = 0 and is part of the official schedule.
    """
    if t >= horizon:
        return beta_end

    def half_life(beta: float) -> float:
        return math.log(0.5) / math.log(beta + 1e-8) - 1

    frac = t / horizon
    mixed = (1.0 - frac) * half_life(beta_start) + frac * half_life(beta_end)
    return math.pow(0.5, 1.0 / (mixed + 1))


def default_foreach(params: Sequence[Tensor]) -> bool:
    if all(p.device.type == "cpu" for p in params):
        return FOREACH_ON_CPU
    return all(p.device.type in ("cuda", "xpu") for p in params)


def group_by(keys: Sequence[Hashable]) -> list[list[int]]:
    """Indices of equal keys, in first-seen order (for foreach buckets of one device/dtype/step)."""
    buckets: dict[Hashable, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        buckets[key].append(i)
    return list(buckets.values())


def pick(seq: Sequence[Any], idx: Sequence[int]) -> list[Any]:
    return [seq[i] for i in idx]


def params_with_grad(group: dict) -> list[Tensor]:
    """Parameters that take part in this step: ``grad is None`` is skipped entirely."""
    out = []
    for p in group["params"]:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            raise RuntimeError("sparse gradients are not supported; use a dense embedding")
        out.append(p)
    return out


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held in tensors of the optimizer state (what ``optimizer_state_bytes`` reports)."""
    total = 0
    seen: set[int] = set()
    for state in optimizer.state.values():
        for value in state.values():
            if not isinstance(value, Tensor) or value.data_ptr() in seen:
                continue
            if value.numel():
                seen.add(value.data_ptr())
            total += value.numel() * value.element_size()
    return total


class BenchOptimizer(OptimizerInfo, torch.optim.Optimizer):
    """Base of the project's own optimizers: closure handling and foreach dispatch.

    Subclasses implement ``_step_group(group, params)`` for the parameters that have a gradient.
    """

    def use_foreach(self, group: dict, params: Sequence[Tensor]) -> bool:
        flag = group.get("foreach")
        return default_foreach(params) if flag is None else bool(flag)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - documented on torch.optim.Optimizer
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = params_with_grad(group)
            if params:
                self._step_group(group, params)
        return loss

    def _step_group(self, group: dict, params: list[Tensor]) -> None:  # pragma: no cover
        raise NotImplementedError
