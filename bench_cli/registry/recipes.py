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

Recipe = Callable[..., dict[str, Any]]


def _adamw(lr: float, b1: float, b2: float, wd: float, task: Any = None) -> dict[str, Any]:
    return dict(lr=lr, betas=(b1, b2), weight_decay=wd)


def _ademamix(lr: float, b1: float, b2: float, wd: float, task: Any = None) -> dict[str, Any]:
    # Pagliardini, Ablin & Grangier 2024 (arXiv:2409.03137), official README: Adam's lr and
    # betas plus a slow EMA; alpha 8 with both warmups equal to the run length (filled by the
    # runner). beta3 0.999 (half-life ~700 steps) suits runs of thousands of steps; the paper's
    # 0.9999 is for runs of 100k+ steps.
    return dict(lr=lr, betas=(b1, b2, 0.999), alpha=8.0, weight_decay=wd)


#: Simplified-AdEMAMix's alpha: ~100 at a batch of 32k tokens, scaling down linearly with the
#: batch (Morwani, Vyas, Zhang & Kakade 2025, arXiv:2502.02431, official README)
SIMADEMAMIX_ALPHA_AT_32K = 100.0
SIMADEMAMIX_BETA1 = 0.99


def simplified_ademamix_alpha(task: Any, beta1: float = SIMADEMAMIX_BETA1) -> float:
    """The README's alpha for a task: 100 x 32768 / tokens-per-step, at most 100 (no smaller
    batch was reported); 2(1 - beta1) for a task without gradient noise (the README's
    "curvature dominated regime": a small multiple of 1 - beta1); the official default 0.0 where
    the batch has no token count to scale by (images, unknown tasks)."""
    if task is None:
        return 0.0
    if getattr(task, "seed_independent", False):
        return 2.0 * (1.0 - beta1)
    if getattr(task, "unit", None) == "tokens":
        tokens = int(task.units_per_step)
        return SIMADEMAMIX_ALPHA_AT_32K * min(1.0, 32768.0 / tokens)
    return 0.0


def _simplified_ademamix(
    lr: float, b1: float, b2: float, wd: float, task: Any = None
) -> dict[str, Any]:
    # Morwani et al. 2025 (arXiv:2502.02431), official README: min_beta1 = Adam's beta1, beta1
    # above it, beta2 = Adam's, lr scaled by sqrt((1 - min_beta1)(1 - beta1)) because the
    # momentum is a sum, not an average; weight decay raised by the inverse factor so that
    # lr x wd equals the AdamW baseline's (decoupled decay acts through the product).
    scale = math.sqrt((1.0 - b1) * (1.0 - SIMADEMAMIX_BETA1))
    return dict(
        lr=lr * scale,
        betas=(SIMADEMAMIX_BETA1, b2),
        min_beta1=b1,
        alpha=simplified_ademamix_alpha(task),
        weight_decay=wd / scale,
    )


def _aggmo_adam(lr: float, b1: float, b2: float, wd: float, task: Any = None) -> dict[str, Any]:
    # no paper (OPTIMIZERS.md section 4.2): Adam's lr, beta2 and decay; AggMo's default betas with
    # Adam's beta1 in the middle
    return dict(lr=lr, betas=(0.0, b1, 0.99), beta2=b2, weight_decay=wd)


#: Lion's lr is 3-10x smaller than AdamW's and its decay 3-10x larger, keeping lr x wd (Chen et
#: al. 2023, arXiv:2302.06675, section 5 and the google/automl README); the low end of the range
LION_LR_DIVISOR = 3.0


def _lion(lr: float, b1: float, b2: float, wd: float, task: Any = None) -> dict[str, Any]:
    # betas (0.95, 0.98) of the paper's language-model runs
    return dict(
        lr=lr / LION_LR_DIVISOR, betas=(0.95, 0.98), weight_decay=wd * LION_LR_DIVISOR
    )


def _schedule_free(lr: float, b1: float, b2: float, wd: float, task: Any = None) -> dict[str, Any]:
    # Defazio et al. 2024 (arXiv:2405.15682), README: no lr schedule, warmup through
    # warmup_steps (filled from the run's warmup), AdamW's lr and betas.
    return dict(lr=lr, betas=(b1, b2), weight_decay=wd)


#: MARS's GPT-2 runs (Yuan et al. 2024, arXiv:2411.10438; AGI-Arena/MARS
#: config/train_gpt2_{small,medium,large}_{mars,adamw}.py): lr 10x AdamW's (6e-3 vs 6e-4),
#: lr_1d 5x (3e-3), weight decay 10x smaller (1e-2 vs 1e-1, so lr x wd is AdamW's) and the 1-D
#: branch's decay equal to AdamW's (weight_decay_1d 0.1 vs 0.1)
MARS_LR_FACTOR = 10.0
MARS_LR_1D_FACTOR = 5.0


def _mars(lr: float, b1: float, b2: float, wd: float, task: Any = None) -> dict[str, Any]:
    # optimize_1d "auto": a task of vectors only runs the MARS update, not its AdamW branch
    return dict(
        lr=MARS_LR_FACTOR * lr,
        lr_1d=MARS_LR_1D_FACTOR * lr,
        betas=(0.95, 0.99),
        weight_decay=wd / MARS_LR_FACTOR,
        weight_decay_1d=wd,
        optimize_1d="auto",
    )


def _aggmo(lr: float, b1: float, b2: float, wd: float, task: Any = None) -> dict[str, Any]:
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


def recommended_hparams(
    name: str, baseline: dict[str, Any], accepted: set[str], task: Any = None
) -> dict[str, Any]:
    """The optimizer ``name``'s recommended values for a task whose AdamW baseline is given.

    ``task`` (a Task instance, optional) lets a recipe read the batch (Simplified-AdEMAMix's
    alpha scales with tokens per step); without it the batch-dependent values take their
    official defaults.
    """
    if not baseline:
        return {}
    lr = baseline.get("lr", 1e-3)
    b1, b2 = baseline.get("betas", (0.9, 0.999))
    wd = baseline.get("weight_decay", 0.0)
    recipe = RECIPES.get(name)
    if recipe is None:  # a plug-in without a recipe runs with its own defaults
        return {}
    return recipe(lr, b1, b2, wd, task)
