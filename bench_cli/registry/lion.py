"""Lion: sign of an interpolation between the momentum and the gradient, decoupled weight decay."""

from __future__ import annotations

import torch
from torch import Tensor

from bench_cli.registry import OPTIMIZERS, _fast_steps
from bench_cli.registry._base import (
    BenchOptimizer,
    check_betas,
    check_lr,
    check_nonneg,
    group_by,
    pick,
)


def _single_tensor_lion(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    weight_decay: float,
) -> None:
    """The reference: one parameter at a time, one line per equation of the docstring."""
    for p, g, m in zip(params, grads, exp_avgs):
        if weight_decay != 0.0:
            p.mul_(1.0 - lr * weight_decay)  # decoupled, times the current lr, before the step
        c = m.mul(beta1).add_(g, alpha=1.0 - beta1)  # c: interpolation, a temporary
        p.add_(c.sign_(), alpha=-lr)  # sign(0) = 0: no move where c is exactly zero
        m.mul_(beta2).add_(g, alpha=1.0 - beta2)  # m is updated after p, with beta2


def _multi_tensor_lion(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    weight_decay: float,
) -> None:
    """The same update with ``torch._foreach_*`` ops, one bucket per (device, dtype)."""
    keys = [(p.device, p.dtype) for p in params]
    for idx in group_by(keys, params):
        ps, gs, ms = pick(params, idx), pick(grads, idx), pick(exp_avgs, idx)
        if weight_decay != 0.0:
            torch._foreach_mul_(ps, 1.0 - lr * weight_decay)
        cs = torch._foreach_mul(ms, beta1)
        torch._foreach_add_(cs, gs, alpha=1.0 - beta1)
        torch._foreach_sign_(cs)
        torch._foreach_add_(ps, cs, alpha=-lr)
        torch._foreach_mul_(ms, beta2)
        torch._foreach_add_(ms, gs, alpha=1.0 - beta2)


@OPTIMIZERS.register("lion")
class Lion(BenchOptimizer):
    r"""Lion (Chen et al., 2023), as the official PyTorch code (google/automl) computes it.

    For each parameter :math:`p` with gradient :math:`g`:

    .. math::
        p &\leftarrow p\,(1 - \eta\lambda) \\
        c &= \beta_1 m + (1-\beta_1) g \\
        p &\leftarrow p - \eta\,\operatorname{sign}(c) \qquad (\operatorname{sign}(0) = 0) \\
        m &\leftarrow \beta_2 m + (1-\beta_2) g

    No bias correction, no :math:`\epsilon`, no step counter. A zero gradient still moves
    :math:`p` by :math:`\eta\,\operatorname{sign}(\beta_1 m)` while :math:`m \neq 0`.

    Symbols: :math:`\eta` = ``lr`` (the current group lr); :math:`\beta_1, \beta_2` = ``betas``
    (:math:`\beta_1` interpolates for the update, :math:`\beta_2` tracks the momentum);
    :math:`\lambda` = ``weight_decay`` (decoupled, scaled by the current lr, so the effective decay
    per step is :math:`\eta\lambda`: the authors use a 3-10x smaller lr and a 3-10x larger
    :math:`\lambda` than for AdamW).
    """

    paper = (
        "Chen et al., Symbolic Discovery of Optimization Algorithms, NeurIPS 2023 "
        "(official code: google/automl lion)"
    )
    state_memory = "m: 1 x params"

    def __init__(
        self,
        params,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        *,
        foreach: bool | None = None,
        fused: bool | None = None,
    ):
        check_lr(lr)
        check_betas(betas, 2)
        check_nonneg("weight_decay", weight_decay)
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "weight_decay": weight_decay,
            "foreach": foreach,
            "fused": fused,
        }
        super().__init__(params, defaults)

    def _step_group(self, group: dict, params: list[Tensor]) -> None:
        fast = self.begin_group(group, params)
        beta1, beta2 = group["betas"]
        grads, exp_avgs = [], []
        for p in params:
            state = self.state[p]
            if len(state) == 0:
                state["exp_avg"] = self.new_state(p)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
        fn = self.implementation(
            fast, group, params, _fast_steps.lion, _multi_tensor_lion, _single_tensor_lion
        )
        fn(
            params,
            grads,
            exp_avgs,
            lr=float(group["lr"]),
            beta1=beta1,
            beta2=beta2,
            weight_decay=group["weight_decay"],
        )
