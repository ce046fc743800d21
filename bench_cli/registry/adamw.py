"""AdamW, written from torch's own update with the same operation order."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bench_cli.registry import OPTIMIZERS, _fast_steps
from bench_cli.registry._base import (
    BenchOptimizer,
    check,
    check_betas,
    check_lr,
    check_nonneg,
    group_by,
    pick,
)


def _single_tensor_adamw(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor | None],
    steps: list[int],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    amsgrad: bool,
) -> None:
    """The reference: one parameter at a time, in ``torch.optim.AdamW``'s order of operations."""
    for p, g, m, v, v_max, t in zip(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps):
        if weight_decay != 0.0:
            p.mul_(1.0 - lr * weight_decay)  # decoupled, scaled by the current lr, before the step
        m.lerp_(g, 1.0 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
        if amsgrad:
            torch.maximum(v_max, v, out=v_max)
            v = v_max
        denom = (v.sqrt() / math.sqrt(1.0 - beta2**t)).add_(eps)  # eps after the correction
        p.addcdiv_(m, denom, value=-lr / (1.0 - beta1**t))


def _multi_tensor_adamw(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor | None],
    steps: list[int],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    amsgrad: bool,
) -> None:
    """The same update with ``torch._foreach_*`` ops, one bucket per (device, dtype, step)."""
    keys = [(p.device, p.dtype, t) for p, t in zip(params, steps)]
    for idx in group_by(keys, params):
        t = steps[idx[0]]
        ps, gs = pick(params, idx), pick(grads, idx)
        ms, vs = pick(exp_avgs, idx), pick(exp_avg_sqs, idx)
        if weight_decay != 0.0:
            torch._foreach_mul_(ps, 1.0 - lr * weight_decay)
        torch._foreach_lerp_(ms, gs, 1.0 - beta1)
        torch._foreach_mul_(vs, beta2)
        torch._foreach_addcmul_(vs, gs, gs, value=1.0 - beta2)
        if amsgrad:
            v_maxes = pick(max_exp_avg_sqs, idx)
            torch._foreach_maximum_(v_maxes, vs)
            vs = v_maxes
        denom = torch._foreach_sqrt(vs)
        torch._foreach_div_(denom, math.sqrt(1.0 - beta2**t))
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(ps, ms, denom, value=-lr / (1.0 - beta1**t))


@OPTIMIZERS.register("adamw")
class AdamW(BenchOptimizer):
    r"""AdamW (Loshchilov & Hutter 2019), computing what ``torch.optim.AdamW`` computes.

    For each parameter :math:`p` with gradient :math:`g`, at its own step :math:`t`:

    .. math::
        p &\leftarrow p\,(1 - \eta\lambda) \\
        m &\leftarrow \beta_1 m + (1-\beta_1) g \\
        v &\leftarrow \beta_2 v + (1-\beta_2) g^2 \qquad
            (v \leftarrow \max(v_{\max}, v) \text{ with amsgrad}) \\
        p &\leftarrow p - \frac{\eta}{1-\beta_1^t}\,
              \frac{m}{\sqrt{v}/\sqrt{1-\beta_2^t} + \epsilon}

    Symbols: :math:`\eta` = ``lr`` (the current group lr, so decay follows the schedule),
    :math:`\beta_1, \beta_2` = ``betas``, :math:`\epsilon` = ``eps``, :math:`\lambda` =
    ``weight_decay``. Same operations in the same order as torch's per-tensor and foreach paths
    (equal to ``torch.optim.AdamW`` bit for bit on CPU); on CPU the foreach path works through
    cache-sized blocks. For torch's fused CUDA kernel use ``torch.optim.AdamW(fused=True)``.
    """

    paper = "Loshchilov & Hutter, Decoupled Weight Decay Regularization, ICLR 2019"
    state_memory = "m, v: 2 x params (+ v_max with amsgrad)"

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        fused: bool | None = None,
    ):
        check_lr(lr)
        check_betas(betas, 2)
        check_nonneg("eps", eps)
        check_nonneg("weight_decay", weight_decay)
        check(isinstance(amsgrad, bool), f"amsgrad must be True or False, got {amsgrad!r}")
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "foreach": foreach,
            "fused": fused,
        }
        super().__init__(params, defaults)

    def _step_group(self, group: dict, params: list[Tensor]) -> None:
        fast = self.begin_group(group, params)
        beta1, beta2 = group["betas"]
        amsgrad = group["amsgrad"]
        grads, ms, vs, v_maxes, steps = [], [], [], [], []
        for p in params:
            state = self.state[p]
            if len(state) == 0:
                state["step"] = 0
                state["exp_avg"] = self.new_state(p)
                state["exp_avg_sq"] = self.new_state(p)
                if amsgrad:
                    state["max_exp_avg_sq"] = self.new_state(p)
            state["step"] += 1
            grads.append(p.grad)
            ms.append(state["exp_avg"])
            vs.append(state["exp_avg_sq"])
            v_maxes.append(state.get("max_exp_avg_sq"))
            steps.append(state["step"])
        fn = self.implementation(
            fast, group, params, _fast_steps.adamw, _multi_tensor_adamw, _single_tensor_adamw
        )
        fn(
            params,
            grads,
            ms,
            vs,
            v_maxes,
            steps,
            lr=float(group["lr"]),
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            amsgrad=amsgrad,
        )
