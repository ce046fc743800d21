"""Each optimizer's recommended hyperparameters, translated from a task's AdamW baseline.

A task states one AdamW-style baseline (lr, betas, weight_decay). Each built-in optimizer's authors
say how their method's settings relate to a tuned Adam (OPTIMIZERS.md sections 2.2, 3.2, 5.2, 6.2,
7.5); these functions apply that advice, so a run with no overrides is a fair first comparison.
Sweeps then search around these values. A plug-in optimizer without a recipe receives the
baseline keys it accepts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

Recipe = Callable[[float, float, float, float], dict[str, Any]]


def _adamw(lr: float, b1: float, b2: float, wd: float) -> dict[str, Any]:
    return dict(lr=lr, betas=(b1, b2), weight_decay=wd)


def _ademamix(lr: float, b1: float, b2: float, wd: float) -> dict[str, Any]:
    # README: same lr and betas as Adam plus a slow EMA; alpha 8 with both warmups equal to the
    # run length (filled by the runner). beta3 0.999 (half-life ~700 steps) suits runs of
    # thousands of steps; the paper's 0.9999 is for runs of 100k+ steps.
    return dict(lr=lr, betas=(b1, b2, 0.999), alpha=8.0, weight_decay=wd)


def _simplified_ademamix(lr: float, b1: float, b2: float, wd: float) -> dict[str, Any]:
    # README: min_beta1 = Adam's beta1, beta1 above it, beta2 = Adam's, lr scaled by
    # sqrt((1 - min_beta1)(1 - beta1)) because the momentum is a sum, not an average.
    beta1 = 0.99
    scale = math.sqrt((1.0 - b1) * (1.0 - beta1))
    return dict(lr=lr * scale, betas=(beta1, b2), min_beta1=b1, alpha=0.0, weight_decay=wd)


def _aggmo_adam(lr: float, b1: float, b2: float, wd: float) -> dict[str, Any]:
    return dict(lr=lr, betas=(0.0, b1, 0.99), beta2=b2, weight_decay=wd)


def _lion(lr: float, b1: float, b2: float, wd: float) -> dict[str, Any]:
    # README: lr 3-10x smaller than AdamW's and decay 3-10x larger (keeps lr*wd); betas of the
    # paper's language-model runs.
    return dict(lr=lr / 3.0, betas=(0.95, 0.98), weight_decay=wd * 3.0)


def _schedule_free(lr: float, b1: float, b2: float, wd: float) -> dict[str, Any]:
    # README: no lr schedule, warmup through warmup_steps (filled from the run's warmup).
    return dict(lr=lr, betas=(b1, b2), weight_decay=wd)


def _mars(lr: float, b1: float, b2: float, wd: float) -> dict[str, Any]:
    # GPT-2 recipe: lr well above AdamW's (6e-3 vs 6e-4 there; 3x here for small models),
    # lr_1d half of lr, betas (0.95, 0.99), decay 10x smaller. 1-D tensors follow the task's
    # convention of no decay on biases and norms.
    return dict(
        lr=3.0 * lr, lr_1d=1.5 * lr, betas=(0.95, 0.99), weight_decay=wd / 10.0, weight_decay_1d=0.0
    )


def _aggmo(lr: float, b1: float, b2: float, wd: float) -> dict[str, Any]:
    # plain AggMo is SGD-type: its own betas and the lr of the official experiment templates,
    # not Adam's; its decay is coupled L2, so none is carried over
    return dict(lr=0.01, betas=(0.0, 0.9, 0.99), weight_decay=0.0)


RECIPES: dict[str, Recipe] = {
    "aggmo": _aggmo,
    "adamw": _adamw,
    "ademamix": _ademamix,
    "simplified-ademamix": _simplified_ademamix,
    "aggmo-adam": _aggmo_adam,
    "lion": _lion,
    "schedule-free": _schedule_free,
    "mars": _mars,
}


def recommended_hparams(name: str, baseline: dict[str, Any], accepted: set[str]) -> dict[str, Any]:
    """The optimizer ``name``'s recommended values for a task whose AdamW baseline is given."""
    if not baseline:
        return {}
    lr = baseline.get("lr", 1e-3)
    b1, b2 = baseline.get("betas", (0.9, 0.999))
    wd = baseline.get("weight_decay", 0.0)
    recipe = RECIPES.get(name)
    if recipe is not None:
        return recipe(lr, b1, b2, wd)
    out = dict(lr=lr, weight_decay=wd)
    return {k: v for k, v in out.items() if k in accepted}
