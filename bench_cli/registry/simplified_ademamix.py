"""Simplified-AdEMAMix: Adam whose first moment is a theory-style momentum sum plus alpha * g."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bench_cli.registry import OPTIMIZERS, _fast_steps
from bench_cli.registry._base import (
    BenchOptimizer,
    check,
    check_beta,
    check_betas,
    check_lr,
    check_nonneg,
    check_optional_steps,
    group_by,
    halflife_interpolation,
    pick,
)


def _beta1_at(t: int, beta1: float, min_beta1: float, beta1_warmup: int | None) -> float:
    """beta1_t at the per-parameter step t (counted after the increment)."""
    if beta1_warmup is None:
        return beta1
    return halflife_interpolation(min_beta1, beta1, t, beta1_warmup)


def _single_tensor_simplified_ademamix(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[int],
    num_sums: list[float],
    den_sums: list[float],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    alpha: float,
    beta1_warmup: int | None,
    min_beta1: float,
    eps: float,
    weight_decay: float,
    bias_correction1: bool,
    bias_correction2: bool,
) -> tuple[list[float], list[float]]:
    """The reference: one parameter at a time. Returns the updated (num_sums, den_sums)."""
    new_nums, new_dens = [], []
    for p, g, m, v, t, n, d in zip(params, grads, exp_avgs, exp_avg_sqs, steps, num_sums, den_sums):
        beta1_t = _beta1_at(t, beta1, min_beta1, beta1_warmup)
        m.mul_(beta1_t).add_(g)  # theory-style momentum: no (1 - beta1) factor
        n = beta1_t * n + 1.0  # N: the sum of the momentum's weights
        v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
        d = beta2 * d + (1.0 - beta2)  # D = 1 - beta2^t
        denom = v.sqrt().add_(eps * math.sqrt(d))
        update = torch.add(m, g, alpha=alpha).div_(denom)
        if bias_correction1:
            update.div_(n)
        if bias_correction2:
            update.mul_(math.sqrt(d))  # with the eps * sqrt(D) above: sqrt(v / D) + eps
        if weight_decay != 0.0:
            update.add_(p, alpha=weight_decay)  # decoupled: p before the update, times lr below
        p.add_(update, alpha=-lr)
        new_nums.append(n)
        new_dens.append(d)
    return new_nums, new_dens


def _multi_tensor_simplified_ademamix(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[int],
    num_sums: list[float],
    den_sums: list[float],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    alpha: float,
    beta1_warmup: int | None,
    min_beta1: float,
    eps: float,
    weight_decay: float,
    bias_correction1: bool,
    bias_correction2: bool,
) -> tuple[list[float], list[float]]:
    """The same update with ``torch._foreach_*`` ops, one bucket per (device, dtype, step, N, D)."""
    new_nums, new_dens = list(num_sums), list(den_sums)
    keys = [(p.device, p.dtype, t, n, d) for p, t, n, d in zip(params, steps, num_sums, den_sums)]
    for idx in group_by(keys, params):
        t, n, d = steps[idx[0]], num_sums[idx[0]], den_sums[idx[0]]
        ps, gs, ms, vs = (pick(x, idx) for x in (params, grads, exp_avgs, exp_avg_sqs))
        beta1_t = _beta1_at(t, beta1, min_beta1, beta1_warmup)
        torch._foreach_mul_(ms, beta1_t)
        torch._foreach_add_(ms, gs)
        n = beta1_t * n + 1.0
        torch._foreach_mul_(vs, beta2)
        torch._foreach_addcmul_(vs, gs, gs, value=1.0 - beta2)
        d = beta2 * d + (1.0 - beta2)
        denom = torch._foreach_sqrt(vs)
        torch._foreach_add_(denom, eps * math.sqrt(d))
        update = torch._foreach_add(ms, gs, alpha=alpha)
        torch._foreach_div_(update, denom)
        if bias_correction1:
            torch._foreach_div_(update, n)
        if bias_correction2:
            torch._foreach_mul_(update, math.sqrt(d))
        if weight_decay != 0.0:
            torch._foreach_add_(update, ps, alpha=weight_decay)
        torch._foreach_add_(ps, update, alpha=-lr)
        for i in idx:
            new_nums[i], new_dens[i] = n, d
    return new_nums, new_dens


@OPTIMIZERS.register("simplified-ademamix")
class SimplifiedAdEMAMix(BenchOptimizer):
    r"""Simplified-AdEMAMix (Morwani, Vyas, Zhang & Kakade, 2025), as the official code computes it.

    For each parameter :math:`p` with gradient :math:`g`, at its own step :math:`t` (1 at the
    first update), with :math:`m, v, N, D` starting at zero:

    .. math::
        \beta_{1,t} &= h^{-1}\big((1 - t/T)\, h(\beta_{\min}) + (t/T)\, h(\beta_1)\big)
            \text{ for } t < T, \text{ else } \beta_1 \\
        m &\leftarrow \beta_{1,t} m + g \qquad \text{(a sum, not an EMA)} \\
        N &\leftarrow \beta_{1,t} N + 1 \\
        v &\leftarrow \beta_2 v + (1-\beta_2) g^2, \qquad D \leftarrow \beta_2 D + (1-\beta_2) \\
        u &= \frac{\alpha g + m}{\sqrt{v} + \epsilon \sqrt{D}}
            \cdot \Big(\frac{1}{N}\Big)^{[\mathrm{bc}_1]}
            \cdot \big(\sqrt{D}\big)^{[\mathrm{bc}_2]} \\
        p &\leftarrow p - \eta\,(u + \lambda p)

    where :math:`h(\beta) = \ln 0.5 / \ln(\beta + 10^{-8}) - 1` is an EMA's half-life in steps and
    :math:`h^{-1}(x) = 0.5^{1/(x+1)}`; :math:`D = 1 - \beta_2^t`, so with the default flags
    :math:`u = (\alpha g + m) / (\sqrt{v / (1 - \beta_2^t)} + \epsilon)`.

    Symbols: :math:`\eta` = ``lr``; :math:`\beta_1, \beta_2` = ``betas``; :math:`\alpha` =
    ``alpha``; :math:`T` = ``beta1_warmup`` (``None``: no schedule, :math:`\beta_{1,t} = \beta_1`;
    a benchmark run fills it with its total number of steps, as the authors recommend);
    :math:`\beta_{\min}` = ``min_beta1``; :math:`\epsilon` = ``eps``; :math:`\lambda` =
    ``weight_decay`` (decoupled, scaled by the current lr); :math:`[\mathrm{bc}_1]` =
    ``bias_correction1``, :math:`[\mathrm{bc}_2]` = ``bias_correction2``. :math:`N` and :math:`D`
    are the per-parameter state entries ``num_sum`` and ``den_sum``.

    Because :math:`m` is a sum, it is about :math:`1/(1-\beta_1)` times an EMA: the lr must be
    scaled down accordingly (README: :math:`\eta = \eta_{Adam}\sqrt{(1-\beta_{\min})(1-\beta_1)}`).
    """

    paper = (
        "Morwani, Vyas, Zhang & Kakade, Connections between Schedule-Free Optimizers, AdEMAMix, "
        "and Accelerated SGD Variants, 2025 (official code: DepenM/Simplified-AdEMAMix)"
    )
    state_memory = "m, v: 2 x params (+ 2 floats per tensor)"
    horizon_hparams = ("beta1_warmup",)

    def __init__(
        self,
        params,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.99, 0.95),
        alpha: float = 0.0,
        beta1_warmup: int | None = None,
        min_beta1: float = 0.9,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        bias_correction1: bool = False,
        bias_correction2: bool = True,
        *,
        foreach: bool | None = None,
        fused: bool | None = None,
    ):
        check_lr(lr)
        check_betas(betas, 2)
        check_nonneg("alpha", alpha)
        check_optional_steps("beta1_warmup", beta1_warmup)
        check_beta("min_beta1", min_beta1)
        check_nonneg("eps", eps)
        check_nonneg("weight_decay", weight_decay)
        check(
            isinstance(bias_correction1, bool),
            f"bias_correction1 must be True or False, got {bias_correction1!r}",
        )
        check(
            isinstance(bias_correction2, bool),
            f"bias_correction2 must be True or False, got {bias_correction2!r}",
        )
        # The official code keeps the two bias flags as optimizer attributes; here they are group
        # entries, so they travel with state_dict() and can differ between groups.
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "alpha": alpha,
            "beta1_warmup": beta1_warmup,
            "min_beta1": min_beta1,
            "eps": eps,
            "weight_decay": weight_decay,
            "bias_correction1": bias_correction1,
            "bias_correction2": bias_correction2,
            "foreach": foreach,
            "fused": fused,
        }
        super().__init__(params, defaults)

    def _step_group(self, group: dict, params: list[Tensor]) -> None:
        fast = self.begin_group(group, params)
        beta1, beta2 = group["betas"]
        grads, exp_avgs, sqs, steps, nums, dens = [], [], [], [], [], []
        for p in params:
            state = self.state[p]
            if len(state) == 0:
                state["step"] = 0
                state["exp_avg"] = self.new_state(p)
                state["exp_avg_sq"] = self.new_state(p)
                state["num_sum"] = 0.0
                state["den_sum"] = 0.0
            state["step"] += 1
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
            nums.append(state["num_sum"])
            dens.append(state["den_sum"])
        fn = self.implementation(
            fast,
            group,
            params,
            _fast_steps.simplified_ademamix,
            _multi_tensor_simplified_ademamix,
            _single_tensor_simplified_ademamix,
        )
        new_nums, new_dens = fn(
            params,
            grads,
            exp_avgs,
            sqs,
            steps,
            nums,
            dens,
            lr=float(group["lr"]),
            beta1=beta1,
            beta2=beta2,
            alpha=group["alpha"],
            beta1_warmup=group["beta1_warmup"],
            min_beta1=group["min_beta1"],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            bias_correction1=group["bias_correction1"],
            bias_correction2=group["bias_correction2"],
        )
        for p, n, d in zip(params, new_nums, new_dens):
            self.state[p]["num_sum"] = n
            self.state[p]["den_sum"] = d
