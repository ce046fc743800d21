"""An independent float64 oracle for MARS, written straight from OPTIMIZERS.md sections 7.2-7.4.

Deliberately plain: one function per branch, out-of-place tensor arithmetic, bias-corrected
moments written as the equations read. No torch.optim machinery and nothing shared with
``bench_cli.registry.mars``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class MarsConfig:
    """The constructor arguments (section 7.5 names); ``lr0`` is the constructor lr."""

    lr0: float = 3e-3
    betas: tuple[float, float] = (0.95, 0.99)
    eps: float = 1e-8
    gamma: float = 0.025
    mars_type: str = "mars-adamw"
    optimize_1d: bool = False
    lr_1d: float = 3e-3
    betas_1d: tuple[float, float] = (0.9, 0.95)
    weight_decay_1d: float = 0.1


@dataclass
class ParamState:
    """Per-parameter state: step count, moments, previous gradient, whether the last c was clipped."""

    t: int = 0
    m: Tensor | None = None
    v: Tensor | None = None
    g_prev: Tensor | None = None
    clipped: bool = False


def takes_mars_branch(p: Tensor, cfg: MarsConfig) -> bool:
    """Section 7.1: MARS iff optimize_1d or the tensor is exactly 2-D."""
    return cfg.optimize_1d or p.dim() == 2


def _init(st: ParamState, p: Tensor) -> None:
    if st.m is None:
        st.m = torch.zeros_like(p)
        st.v = torch.zeros_like(p)
        st.g_prev = torch.zeros_like(p)


def mars_branch_step(
    p: Tensor, g: Tensor, st: ParamState, cfg: MarsConfig, lr: float, weight_decay: float
) -> Tensor:
    """Section 7.2 steps 1-5; the caller sets g_prev (step 6)."""
    beta1, beta2 = cfg.betas
    st.t += 1
    c = g + cfg.gamma * (beta1 / (1 - beta1)) * (g - st.g_prev)
    norm = math.sqrt(float((c * c).sum()))
    st.clipped = norm > 1.0
    if st.clipped:
        c = c / norm
    st.m = beta1 * st.m + (1 - beta1) * c
    if cfg.mars_type == "mars-adamw":
        st.v = beta2 * st.v + (1 - beta2) * c * c
        m_hat = st.m / (1 - beta1**st.t)
        v_hat_sqrt = torch.sqrt(st.v) / math.sqrt(1 - beta2**st.t)
        return p - lr * (weight_decay * p + m_hat / (v_hat_sqrt + cfg.eps))
    if cfg.mars_type == "mars-lion":
        return p - lr * (weight_decay * p + torch.sign(st.m))
    raise ValueError(cfg.mars_type)


def adamw_branch_step(p: Tensor, g: Tensor, st: ParamState, cfg: MarsConfig, lr: float) -> Tensor:
    """Section 7.3: AdamW on g with lr * lr_1d / lr0, betas_1d and weight_decay_1d."""
    beta1, beta2 = cfg.betas_1d
    lr_1d = lr * cfg.lr_1d / cfg.lr0
    st.t += 1
    st.m = beta1 * st.m + (1 - beta1) * g
    st.v = beta2 * st.v + (1 - beta2) * g * g
    m_hat = st.m / (1 - beta1**st.t)
    v_hat_sqrt = torch.sqrt(st.v) / math.sqrt(1 - beta2**st.t)
    return p - lr_1d * (cfg.weight_decay_1d * p + m_hat / (v_hat_sqrt + cfg.eps))


def reference_step(
    p: Tensor,
    g: Tensor | None,
    st: ParamState,
    cfg: MarsConfig,
    lr: float,
    weight_decay: float,
    g_lookahead: Tensor | None = None,
) -> Tensor:
    """One step of one parameter in float64; returns the new parameter.

    ``lr`` and ``weight_decay`` are the param group's current values. ``g is None`` skips the
    parameter. ``g_lookahead`` (exact variant, section 7.4) is the next batch's gradient at the
    current point; it becomes g_prev instead of g.
    """
    p = p.to(torch.float64)
    if g is None:
        return p
    g = g.to(torch.float64)
    _init(st, p)
    if not takes_mars_branch(p, cfg):
        return adamw_branch_step(p, g, st, cfg, lr)
    p_new = mars_branch_step(p, g, st, cfg, lr, weight_decay)
    st.g_prev = g.clone() if g_lookahead is None else g_lookahead.to(torch.float64).clone()
    return p_new
