"""Schedule-Free AdamW: no lr schedule; the parameters are an interpolation of two sequences."""

from __future__ import annotations

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
    params_with_grad,
    pick,
)


def _single_tensor_schedule_free(
    params: list[Tensor],
    grads: list[Tensor],
    zs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    *,
    lr: float,
    ckp1: float,
    beta1: float,
    beta2: float,
    bias_correction2: float,
    eps: float,
    weight_decay: float,
) -> None:
    """The reference: one parameter at a time, one line per equation of the docstring.

    ``params`` hold y (train mode); ``lr`` is the scheduled lr eta_k, ``ckp1`` the weight c.
    """
    for y, g, z, v in zip(params, grads, zs, exp_avg_sqs):
        v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
        denom = v.div(bias_correction2).sqrt_().add_(eps)  # sqrt(v / (1 - beta2^(k+1))) + eps
        u = g.div(denom)  # a temporary: p.grad is left untouched
        if weight_decay != 0.0:
            u.add_(y, alpha=weight_decay)  # decay evaluated at y, where g was computed
        y.lerp_(z, ckp1)  # y <- (1 - c) y + c z
        y.add_(u, alpha=lr * (beta1 * (1.0 - ckp1) - 1.0))
        z.sub_(u, alpha=lr)


def _multi_tensor_schedule_free(
    params: list[Tensor],
    grads: list[Tensor],
    zs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    *,
    lr: float,
    ckp1: float,
    beta1: float,
    beta2: float,
    bias_correction2: float,
    eps: float,
    weight_decay: float,
) -> None:
    """The same update with ``torch._foreach_*`` ops, one bucket per (device, dtype)."""
    keys = [(p.device, p.dtype) for p in params]
    for idx in group_by(keys, params):
        ys, gs, vs = pick(params, idx), pick(grads, idx), pick(exp_avg_sqs, idx)
        bucket_zs = pick(zs, idx)
        torch._foreach_mul_(vs, beta2)
        torch._foreach_addcmul_(vs, gs, gs, value=1.0 - beta2)
        denom = torch._foreach_div(vs, bias_correction2)
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, eps)
        # Memory: u and denom are both alive here (2 x bucket size); the official code writes u
        # into p.grad instead, which we do not do so that step() leaves gradients untouched.
        us = torch._foreach_div(gs, denom)
        del denom
        if weight_decay != 0.0:
            torch._foreach_add_(us, ys, alpha=weight_decay)
        torch._foreach_lerp_(ys, bucket_zs, ckp1)
        torch._foreach_add_(ys, us, alpha=lr * (beta1 * (1.0 - ckp1) - 1.0))
        torch._foreach_sub_(bucket_zs, us, alpha=lr)


@OPTIMIZERS.register("schedule-free")
class ScheduleFreeAdamW(BenchOptimizer):
    r"""Schedule-Free AdamW (Defazio et al., 2024), as ``schedulefree.AdamWScheduleFree`` 1.4.1.

    Three sequences: :math:`z` (the base AdamW-like iterate), :math:`x` (a weighted average of
    the :math:`z`, where the model is evaluated) and :math:`y` (where gradients are taken). In
    train mode the parameters hold :math:`y`; in eval mode they hold :math:`x`. At the group's
    step :math:`k` (0 at the first step), for each parameter with gradient :math:`g` at
    :math:`y`:

    .. math::
        \eta_k &= \eta \min\big(1, (k+1)/W\big) \\
        \eta_{\max} &\leftarrow \max(\eta_{\max}, \eta_k), \qquad
            w_k = (k+1)^r\, \eta_{\max}^P, \qquad S \leftarrow S + w_k, \qquad c = w_k / S \\
        v &\leftarrow \beta_2 v + (1-\beta_2) g^2 \\
        u &= \frac{g}{\sqrt{v / (1-\beta_2^{k+1})} + \epsilon} + \lambda y \\
        z' &= z - \eta_k u, \qquad x' = (1-c)\,x + c\,z', \qquad
            y' = \beta_1 x' + (1-\beta_1) z'

    computed without storing :math:`x` as
    :math:`y \leftarrow (1-c)\,y + c\,z + \eta_k(\beta_1(1-c) - 1)\,u`, then
    :math:`z \leftarrow z - \eta_k u`. ``eval()`` sets :math:`p \leftarrow x = (y - (1-\beta_1) z)
    / \beta_1`; ``train()`` sets :math:`p \leftarrow y = \beta_1 x + (1-\beta_1) z`.

    Symbols: :math:`\eta` = ``lr``; :math:`\beta_1, \beta_2` = ``betas`` (:math:`\beta_1 > 0`:
    eval divides by it); :math:`\epsilon` = ``eps``; :math:`\lambda` = ``weight_decay``;
    :math:`W` = ``warmup_steps`` (the optimizer's own linear warmup: give it no lr warmup from
    outside); :math:`r` = ``r``; :math:`P` = ``weight_lr_power``. The group-level scalars
    :math:`k`, :math:`\eta_{\max}`, :math:`S`, :math:`\eta_k` are ``k``, ``lr_max``,
    ``weight_sum``, ``scheduled_lr`` in each param group (so they are in ``state_dict``); the
    state per parameter is ``z`` and ``exp_avg_sq`` (:math:`v`).

    The optimizer starts in eval mode: call ``optimizer.train()`` before training steps and
    ``optimizer.eval()`` before evaluating or saving, next to the model's ``train()``/``eval()``.
    Unlike the official code, ``step()`` does not overwrite ``p.grad``.
    """

    paper = (
        "Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky, The Road Less Scheduled, "
        "NeurIPS 2024 (official code: facebookresearch/schedule_free)"
    )
    state_memory = "z, v: 2 x params (p holds y in train mode, x in eval mode)"
    has_train_eval_modes = True
    owns_warmup = True
    owns_lr_schedule = True  # schedule-free: the loop keeps the lr constant

    def __init__(
        self,
        params,
        lr: float = 0.0025,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2.0,
        *,
        foreach: bool | None = None,
        fused: bool | None = None,
    ):
        check_lr(lr)
        check_betas(betas, 2)
        check(
            betas[0] > 0.0,
            f"betas[0] must be in (0, 1) for Schedule-Free (eval() divides by it), got {betas[0]!r}",
        )
        check_nonneg("eps", eps)
        check_nonneg("weight_decay", weight_decay)
        check(
            isinstance(warmup_steps, int)
            and not isinstance(warmup_steps, bool)
            and warmup_steps >= 0,
            f"warmup_steps must be an integer >= 0, got {warmup_steps!r}",
        )
        check_nonneg("r", r)
        check_nonneg("weight_lr_power", weight_lr_power)
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "warmup_steps": warmup_steps,
            "r": r,
            "weight_lr_power": weight_lr_power,
            "foreach": foreach,
            "fused": fused,
            # group-level state, kept in param_groups so that state_dict() carries it
            "k": 0,
            "lr_max": -1.0,
            "weight_sum": 0.0,
            "scheduled_lr": 0.0,
            "train_mode": False,
        }
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        # A group added later joins the current mode: its params have no z yet, so x = y = p.
        if self.param_groups:
            param_group.setdefault("train_mode", self.param_groups[0]["train_mode"])
        super().add_param_group(param_group)

    @torch.no_grad()
    def _switch(self, to_train: bool) -> None:
        for group in self.param_groups:
            if group["train_mode"] == to_train:
                continue  # idempotent: p already holds the requested sequence
            beta1 = group["betas"][0]
            # eval: x = lerp(y, z, 1 - 1/beta1); train: y = lerp(x, z, 1 - beta1)
            weight = 1.0 - beta1 if to_train else 1.0 - 1.0 / beta1
            for p in group["params"]:
                z = self.state[p].get("z")
                if z is not None and z.dtype == p.dtype:
                    p.lerp_(z, weight)
                elif z is not None:  # fp32 z of the fast path for 16-bit parameters
                    p.copy_(p.to(z.dtype).lerp_(z, weight))
            group["train_mode"] = to_train

    def train(self) -> None:
        """Parameters hold y, where gradients are taken (call next to ``model.train()``)."""
        self._switch(True)

    def eval(self) -> None:
        """Parameters hold x, the averaged point to evaluate and save (next to ``model.eval()``)."""
        self._switch(False)

    @torch.no_grad()
    def step(self, closure=None):
        if not all(group["train_mode"] for group in self.param_groups):
            raise RuntimeError(
                "ScheduleFreeAdamW is in eval mode (parameters hold x, not y): call "
                "optimizer.train() before training steps and optimizer.eval() before evaluating"
            )
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Unlike the base class, visit groups without gradients too: k and the weights are
        # per group and advance every step, as in the official code.
        for group in self.param_groups:
            self._step_group(group, params_with_grad(group))
        return loss

    def _step_group(self, group: dict, params: list[Tensor]) -> None:
        beta1, beta2 = group["betas"]
        k = group["k"]
        warmup = group["warmup_steps"]
        lr = float(group["lr"]) * ((k + 1) / warmup if k < warmup else 1.0)
        group["scheduled_lr"] = lr
        lr_max = group["lr_max"] = max(group["lr_max"], lr)
        weight = (k + 1) ** group["r"] * lr_max ** group["weight_lr_power"]
        weight_sum = group["weight_sum"] = group["weight_sum"] + weight
        ckp1 = weight / weight_sum if weight_sum != 0.0 else 0.0
        group["k"] = k + 1
        if not params:
            return
        fast = self.begin_group(group, params)
        grads, zs, exp_avg_sqs = [], [], []
        for p in params:
            state = self.state[p]
            if len(state) == 0:
                state["z"] = self.new_state(p).copy_(p)
                state["exp_avg_sq"] = self.new_state(p)
            grads.append(p.grad)
            zs.append(state["z"])
            exp_avg_sqs.append(state["exp_avg_sq"])
        fn = self.implementation(
            fast,
            group,
            params,
            _fast_steps.schedule_free,
            _multi_tensor_schedule_free,
            _single_tensor_schedule_free,
        )
        fn(
            params,
            grads,
            zs,
            exp_avg_sqs,
            lr=lr,
            ckp1=ckp1,
            beta1=beta1,
            beta2=beta2,
            bias_correction2=1.0 - beta2 ** (k + 1),
            eps=group["eps"],
            weight_decay=group["weight_decay"],
        )
