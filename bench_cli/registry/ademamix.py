"""AdEMAMix: Adam with a mixture of a fast and a slow (un-bias-corrected) gradient EMA."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bench_cli.registry import OPTIMIZERS, _fast_steps
from bench_cli.registry._base import (
    BenchOptimizer,
    check_betas,
    check_lr,
    check_nonneg,
    check_optional_steps,
    group_by,
    halflife_interpolation,
    pick,
)


def _schedules(
    t: int,
    alpha: float,
    beta1: float,
    beta3: float,
    alpha_warmup: int | None,
    beta3_warmup: int | None,
) -> tuple[float, float]:
    """alpha_t and beta3_t at the per-parameter step t (counted after the increment)."""
    alpha_t = alpha * t / alpha_warmup if alpha_warmup is not None and t < alpha_warmup else alpha
    beta3_t = beta3
    if beta3_warmup is not None:
        beta3_t = halflife_interpolation(beta1, beta3, t, beta3_warmup)
    return alpha_t, beta3_t


def _single_tensor_ademamix(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avg_fasts: list[Tensor | None],
    exp_avg_slows: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[int],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    beta3: float,
    alpha: float,
    alpha_warmup: int | None,
    beta3_warmup: int | None,
    eps: float,
    weight_decay: float,
) -> None:
    """The reference: one parameter at a time, one line per equation of the docstring."""
    for p, g, m1, m2, v, t in zip(params, grads, exp_avg_fasts, exp_avg_slows, exp_avg_sqs, steps):
        alpha_t, beta3_t = _schedules(t, alpha, beta1, beta3, alpha_warmup, beta3_warmup)
        bc1 = 1.0 - beta1**t
        bc2 = 1.0 - beta2**t
        if m1 is None:  # beta1 = 0: the fast EMA is the gradient itself
            m1 = g
        else:
            m1.mul_(beta1).add_(g, alpha=1.0 - beta1)
        m2.mul_(beta3_t).add_(g, alpha=1.0 - beta3_t)  # slow EMA, never bias-corrected
        v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
        denom = v.sqrt().div_(math.sqrt(bc2)).add_(eps)  # eps after the bias correction
        update = m1.div(bc1).add_(m2, alpha=alpha_t).div_(denom)
        if weight_decay != 0.0:
            update.add_(p, alpha=weight_decay)  # decoupled: p before the update, times lr below
        p.add_(update, alpha=-lr)


def _multi_tensor_ademamix(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avg_fasts: list[Tensor | None],
    exp_avg_slows: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[int],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    beta3: float,
    alpha: float,
    alpha_warmup: int | None,
    beta3_warmup: int | None,
    eps: float,
    weight_decay: float,
) -> None:
    """The same update with ``torch._foreach_*`` ops, one bucket per (device, dtype, step)."""
    keys = [(p.device, p.dtype, t) for p, t in zip(params, steps)]
    for idx in group_by(keys, params):
        t = steps[idx[0]]
        ps, gs = pick(params, idx), pick(grads, idx)
        m2s, vs = pick(exp_avg_slows, idx), pick(exp_avg_sqs, idx)
        alpha_t, beta3_t = _schedules(t, alpha, beta1, beta3, alpha_warmup, beta3_warmup)
        bc1 = 1.0 - beta1**t
        bc2 = 1.0 - beta2**t
        if beta1 == 0.0:
            m1s = gs
        else:
            m1s = pick(exp_avg_fasts, idx)
            torch._foreach_mul_(m1s, beta1)
            torch._foreach_add_(m1s, gs, alpha=1.0 - beta1)
        torch._foreach_mul_(m2s, beta3_t)
        torch._foreach_add_(m2s, gs, alpha=1.0 - beta3_t)
        torch._foreach_mul_(vs, beta2)
        torch._foreach_addcmul_(vs, gs, gs, value=1.0 - beta2)
        denom = torch._foreach_sqrt(vs)
        torch._foreach_div_(denom, math.sqrt(bc2))
        torch._foreach_add_(denom, eps)
        update = torch._foreach_div(m1s, bc1)
        torch._foreach_add_(update, m2s, alpha=alpha_t)
        torch._foreach_div_(update, denom)
        if weight_decay != 0.0:
            torch._foreach_add_(update, ps, alpha=weight_decay)
        torch._foreach_add_(ps, update, alpha=-lr)


@OPTIMIZERS.register("ademamix")
class AdEMAMix(BenchOptimizer):
    r"""AdEMAMix (Pagliardini, Ablin & Grangier, 2024), as the official PyTorch code computes it.

    For each parameter :math:`p` with gradient :math:`g`, at its own step :math:`t` (1 at the first
    update), with :math:`b_i = 1 - \beta_i^t`:

    .. math::
        \alpha_t &= \alpha \min(1, t / T_\alpha) \\
        \beta_{3,t} &= h^{-1}\big((1 - t/T_{\beta_3})\, h(\beta_1) + (t/T_{\beta_3})\, h(\beta_3)\big)
            \text{ for } t < T_{\beta_3}, \text{ else } \beta_3 \\
        m_1 &\leftarrow \beta_1 m_1 + (1-\beta_1) g \qquad (m_1 := g \text{ if } \beta_1 = 0) \\
        m_2 &\leftarrow \beta_{3,t} m_2 + (1-\beta_{3,t}) g \qquad \text{(never bias-corrected)} \\
        v &\leftarrow \beta_2 v + (1-\beta_2) g^2 \\
        p &\leftarrow p - \eta \Big( \frac{m_1/b_1 + \alpha_t m_2}{\sqrt{v}/\sqrt{b_2} + \epsilon}
            + \lambda p \Big)

    where :math:`h(\beta) = \ln 0.5 / \ln(\beta + 10^{-8}) - 1` is an EMA's half-life in steps and
    :math:`h^{-1}(x) = 0.5^{1/(x+1)}`.

    Symbols: :math:`\eta` = ``lr``; :math:`\beta_1, \beta_2, \beta_3` = ``betas``;
    :math:`\alpha` = ``alpha``; :math:`T_\alpha` = ``alpha_warmup`` and
    :math:`T_{\beta_3}` = ``beta3_warmup`` (``None``: no schedule; a benchmark run fills both with
    its total number of steps, as the authors recommend); :math:`\epsilon` = ``eps``;
    :math:`\lambda` = ``weight_decay`` (decoupled, scaled by the current lr).
    """

    paper = (
        "Pagliardini, Ablin & Grangier, The AdEMAMix Optimizer: Better, Faster, Older, ICLR 2025 "
        "(official code: apple/ml-ademamix)"
    )
    state_memory = "m1, m2, v: 3 x params (2 x when betas[0] = 0)"
    horizon_hparams = ("alpha_warmup", "beta3_warmup")

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float, float] = (0.9, 0.999, 0.9999),
        alpha: float = 2.0,
        beta3_warmup: int | None = None,
        alpha_warmup: int | None = None,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        foreach: bool | None = None,
        fused: bool | None = None,
    ):
        check_lr(lr)
        check_betas(betas, 3)
        check_nonneg("alpha", alpha)
        check_optional_steps("beta3_warmup", beta3_warmup)
        check_optional_steps("alpha_warmup", alpha_warmup)
        check_nonneg("eps", eps)
        check_nonneg("weight_decay", weight_decay)
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            alpha=alpha,
            beta3_warmup=beta3_warmup,
            alpha_warmup=alpha_warmup,
            eps=eps,
            weight_decay=weight_decay,
            foreach=foreach,
            fused=fused,
        )
        super().__init__(params, defaults)

    def _step_group(self, group: dict, params: list[Tensor]) -> None:
        fast = self.begin_group(group, params)
        beta1, beta2, beta3 = group["betas"]
        grads, fasts, slows, sqs, steps = [], [], [], [], []
        for p in params:
            state = self.state[p]
            if len(state) == 0:
                state["step"] = 0
                state["exp_avg_fast"] = (
                    None
                    if beta1 == 0.0
                    else self.new_state(p)
                )
                state["exp_avg_slow"] = self.new_state(p)
                state["exp_avg_sq"] = self.new_state(p)
            state["step"] += 1
            grads.append(p.grad)
            fasts.append(state["exp_avg_fast"])
            slows.append(state["exp_avg_slow"])
            sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        fn = self.implementation(
            fast, group, params, _fast_steps.ademamix, _multi_tensor_ademamix,
            _single_tensor_ademamix,
        )
        fn(
            params,
            grads,
            fasts,
            slows,
            sqs,
            steps,
            lr=float(group["lr"]),
            beta1=beta1,
            beta2=beta2,
            beta3=beta3,
            alpha=group["alpha"],
            alpha_warmup=group["alpha_warmup"],
            beta3_warmup=group["beta3_warmup"],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
        )
