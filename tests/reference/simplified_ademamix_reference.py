"""Independent float64 oracle for Simplified-AdEMAMix, written from OPTIMIZERS.md section 3.1.

No optimizer machinery and no code shared with ``bench_cli``: one out-of-place step per call, on
one parameter, with its state in a plain dict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class SimAdEMAMixConfig:
    lr: float
    beta1: float = 0.99
    beta2: float = 0.95
    alpha: float = 0.0
    beta1_warmup: int | None = None
    min_beta1: float = 0.9
    eps: float = 1e-8
    weight_decay: float = 0.0
    bias_correction1: bool = False
    bias_correction2: bool = True


def scheduled_beta1(cfg: SimAdEMAMixConfig, t: int) -> float:
    """beta1_t: half-lives interpolated linearly from min_beta1 to beta1 over beta1_warmup steps."""
    if cfg.beta1_warmup is None or t >= cfg.beta1_warmup:
        return cfg.beta1

    def half_life(beta: float) -> float:
        return math.log(0.5) / math.log(beta + 1e-8) - 1.0

    frac = t / cfg.beta1_warmup
    mixed = (1.0 - frac) * half_life(cfg.min_beta1) + frac * half_life(cfg.beta1)
    return 0.5 ** (1.0 / (mixed + 1.0))


def new_state(p: Tensor) -> dict:
    zeros = torch.zeros_like(p, dtype=torch.float64)
    return {"t": 0, "m": zeros, "v": zeros.clone(), "N": 0.0, "D": 0.0}


def simplified_ademamix_step(p: Tensor, g: Tensor, state: dict, cfg: SimAdEMAMixConfig) -> Tensor:
    """Return the parameter after one step (float64) and update ``state`` in place."""
    p, g = p.double(), g.double()
    t = state["t"] + 1
    beta1_t = scheduled_beta1(cfg, t)
    m = beta1_t * state["m"] + g
    n = beta1_t * state["N"] + 1.0
    v = cfg.beta2 * state["v"] + (1.0 - cfg.beta2) * g * g
    d = cfg.beta2 * state["D"] + (1.0 - cfg.beta2)
    u = (cfg.alpha * g + m) / (torch.sqrt(v) + cfg.eps * math.sqrt(d))
    if cfg.bias_correction1:
        u = u / n
    if cfg.bias_correction2:
        u = u * math.sqrt(d)
    state.update(t=t, m=m, v=v, N=n, D=d)
    return p - cfg.lr * (u + cfg.weight_decay * p)
