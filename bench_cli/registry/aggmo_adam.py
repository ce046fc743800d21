"""AggMo (several momentum buffers, averaged) and AggMo-Adam (several EMAs mixed over Adam's v)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from bench_cli.registry import OPTIMIZERS, _fast_steps
from bench_cli.registry._base import (
    BenchOptimizer,
    check,
    check_beta,
    check_lr,
    check_nonneg,
    group_by,
    pick,
)


def _check_beta_list(betas: Any) -> None:
    check(
        isinstance(betas, (tuple, list)) and len(betas) > 0,
        f"betas must be a non-empty sequence of numbers, got {betas!r}",
    )
    for i, beta in enumerate(betas):
        check_beta(f"betas[{i}]", beta)


def _check_weights(weights: Any, count: int) -> None:
    """``weights`` is None or one finite number per beta, not all 0."""
    if weights is None:
        return
    check(
        isinstance(weights, (tuple, list)) and len(weights) == count,
        f"weights must be None or {count} numbers (one per beta), got {weights!r}",
    )
    for i, w in enumerate(weights):
        check(
            isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w),
            f"weights[{i}] must be a finite number, got {w!r}",
        )
    check(
        any(w != 0 for w in weights),
        f"weights must not all be 0 (the update would be 0 and nothing would train), got "
        f"{weights!r}",
    )


def _check_flags(bias_correct: Any, count: int) -> None:
    """``bias_correct`` is None or one bool per beta."""
    if bias_correct is None:
        return
    check(
        isinstance(bias_correct, (tuple, list)) and len(bias_correct) == count,
        f"bias_correct must be None or {count} booleans (one per beta), got {bias_correct!r}",
    )
    for i, flag in enumerate(bias_correct):
        check(isinstance(flag, bool), f"bias_correct[{i}] must be True or False, got {flag!r}")


def _buffers(state: dict, p: Tensor, betas: Sequence[float], prefix: str, keep_zero: bool,
             new_state) -> list:  # fmt: skip
    """One buffer per beta, ``state[f"{prefix}_{i}"]``, created at zero when first needed.

    Keyed by position so that state_dict() round-trips them as plain tensors. With
    ``keep_zero=False`` a beta of 0 keeps no buffer (None): its EMA is the gradient itself.
    """
    out: list[Tensor | None] = []
    for i, beta in enumerate(betas):
        if beta == 0.0 and not keep_zero:
            out.append(None)
            continue
        key = f"{prefix}_{i}"
        if key not in state:
            state[key] = new_state(p)
        out.append(state[key])
    return out


# --------------------------------------------------------------------------------------------
# AggMo


def _single_tensor_aggmo(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[list[Tensor]],
    *,
    lr: float,
    betas: Sequence[float],
    weight_decay: float,
) -> None:
    """The reference: one parameter at a time; ``momentum_buffers[i][j]`` is b_i of params[j]."""
    k = len(betas)
    for j, (p, g) in enumerate(zip(params, grads)):
        # d = g + lambda p (coupled L2), in a temporary: p.grad is left as the caller gave it
        d = torch.add(g, p, alpha=weight_decay) if weight_decay != 0.0 else g
        for beta, bufs in zip(betas, momentum_buffers):
            b = bufs[j]
            b.mul_(beta).add_(d)  # b_i <- beta_i b_i + d
            p.sub_(b, alpha=lr / k)  # p <- p - (eta / K) b_i, right after each buffer


def _multi_tensor_aggmo(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[list[Tensor]],
    *,
    lr: float,
    betas: Sequence[float],
    weight_decay: float,
) -> None:
    """The same update with ``torch._foreach_*`` ops, one bucket per (device, dtype)."""
    k = len(betas)
    for idx in group_by([(p.device, p.dtype) for p in params], params):
        ps, gs = pick(params, idx), pick(grads, idx)
        ds = torch._foreach_add(gs, ps, alpha=weight_decay) if weight_decay != 0.0 else gs
        for beta, bufs in zip(betas, momentum_buffers):
            bs = pick(bufs, idx)
            torch._foreach_mul_(bs, beta)
            torch._foreach_add_(bs, ds)
            torch._foreach_sub_(ps, bs, alpha=lr / k)


@OPTIMIZERS.register("aggmo")
class AggMo(BenchOptimizer):
    r"""Aggregated Momentum (Lucas, Sun, Zemel & Grosse, 2019), as the official code computes it.

    For each parameter :math:`p` with gradient :math:`g`, with buffers :math:`b_i` starting at
    zero, one per :math:`\beta_i`, :math:`i = 1..K`, updated in order:

    .. math::
        d &= g + \lambda p \qquad \text{(coupled L2)} \\
        b_i &\leftarrow \beta_i b_i + d, \qquad p \leftarrow p - \frac{\eta}{K} b_i
            \quad \text{for } i = 1..K

    No step counter and no bias correction: the first step is a plain SGD step
    :math:`p - \eta d`; for a constant gradient the step tends to
    :math:`(\eta/K)\sum_i 1/(1-\beta_i)` times it (37 for the default betas).

    Symbols: :math:`\eta` = ``lr`` (required, as in the official code); :math:`\beta_i` =
    ``betas[i-1]`` (``from_exp_form(a, k)`` gives :math:`\beta_i = 1 - a^{i-1}`);
    :math:`\lambda` = ``weight_decay``.

    Differences from the official code, none of which changes the result for distinct betas:
    :math:`d` is a temporary (the official code adds :math:`\lambda p` into ``p.grad``), and the
    buffers are keyed by position (``momentum_buffer_0`` ...), not by beta value, so repeated betas
    get separate buffers instead of one buffer updated twice.
    """

    paper = (
        "Lucas, Sun, Zemel & Grosse, Aggregated Momentum: Stability Through Passive Damping, "
        "ICLR 2019 (official code: AtheMathmo/AggMo)"
    )
    state_memory = "b_1..b_K: K x params (3 x for the default betas)"

    def __init__(
        self,
        params,
        lr: float,
        betas: Sequence[float] = (0.0, 0.9, 0.99),
        weight_decay: float = 0.0,
        *,
        foreach: bool | None = None,
        fused: bool | None = None,
    ):
        check_lr(lr)
        _check_beta_list(betas)
        check_nonneg("weight_decay", weight_decay)
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "weight_decay": weight_decay,
            "foreach": foreach,
            "fused": fused,
        }
        super().__init__(params, defaults)

    @classmethod
    def from_exp_form(
        cls, params, lr: float, a: float = 0.1, k: int = 3, weight_decay: float = 0.0, **kwargs
    ) -> AggMo:
        """AggMo with ``betas[i] = 1 - a**i`` for i = 0..k-1 (a = 0.1, k = 3: (0, 0.9, 0.99))."""
        check(isinstance(k, int) and k > 0, f"k must be an integer > 0, got {k!r}")
        check(0.0 < a <= 1.0, f"a must be in (0, 1], got {a!r}")
        betas = tuple(1.0 - a**i for i in range(k))
        return cls(params, lr=lr, betas=betas, weight_decay=weight_decay, **kwargs)

    def _step_group(self, group: dict, params: list[Tensor]) -> None:
        fast = self.begin_group(group, params)
        betas = group["betas"]
        per_param = [
            _buffers(self.state[p], p, betas, "momentum_buffer", True, self.new_state)
            for p in params
        ]
        fn = self.implementation(
            fast, group, params, _fast_steps.aggmo, _multi_tensor_aggmo, _single_tensor_aggmo
        )
        fn(
            params,
            [p.grad for p in params],
            [list(bufs) for bufs in zip(*per_param)],
            lr=float(group["lr"]),
            betas=betas,
            weight_decay=group["weight_decay"],
        )


# --------------------------------------------------------------------------------------------
# AggMo-Adam


def _single_tensor_aggmo_adam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[list[Tensor | None]],
    exp_avg_sqs: list[Tensor],
    steps: list[int],
    *,
    lr: float,
    betas: Sequence[float],
    beta2: float,
    eps: float,
    weight_decay: float,
    weights: Sequence[float],
    bias_correct: Sequence[bool],
) -> None:
    """The reference: one parameter at a time; ``exp_avgs[i][j]`` is m_i of params[j]."""
    for j, (p, g, v, t) in enumerate(zip(params, grads, exp_avg_sqs, steps)):
        if weight_decay != 0.0:
            p.mul_(1.0 - lr * weight_decay)  # decoupled, before the step, like torch AdamW
        v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
        denom = v.sqrt().div_(math.sqrt(1.0 - beta2**t)).add_(eps)  # eps after the correction
        mix = None
        for beta, w, bc, bufs in zip(betas, weights, bias_correct, exp_avgs):
            m = bufs[j]
            if m is None:  # beta = 0: the EMA is the gradient itself
                m = g
            else:
                m.mul_(beta).add_(g, alpha=1.0 - beta)
            scale = w / (1.0 - beta**t) if bc else w  # w_i * m_i-hat = (w_i / (1 - beta_i^t)) m_i
            mix = torch.mul(m, scale) if mix is None else mix.add_(m, alpha=scale)
        p.addcdiv_(mix, denom, value=-lr)


def _multi_tensor_aggmo_adam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[list[Tensor | None]],
    exp_avg_sqs: list[Tensor],
    steps: list[int],
    *,
    lr: float,
    betas: Sequence[float],
    beta2: float,
    eps: float,
    weight_decay: float,
    weights: Sequence[float],
    bias_correct: Sequence[bool],
) -> None:
    """The same update with ``torch._foreach_*`` ops, one bucket per (device, dtype, step)."""
    keys = [(p.device, p.dtype, t) for p, t in zip(params, steps)]
    for idx in group_by(keys, params):
        t = steps[idx[0]]
        ps, gs, vs = pick(params, idx), pick(grads, idx), pick(exp_avg_sqs, idx)
        if weight_decay != 0.0:
            torch._foreach_mul_(ps, 1.0 - lr * weight_decay)
        torch._foreach_mul_(vs, beta2)
        torch._foreach_addcmul_(vs, gs, gs, value=1.0 - beta2)
        denom = torch._foreach_sqrt(vs)
        torch._foreach_div_(denom, math.sqrt(1.0 - beta2**t))
        torch._foreach_add_(denom, eps)
        mix = None
        for beta, w, bc, bufs in zip(betas, weights, bias_correct, exp_avgs):
            if beta == 0.0:
                ms = gs
            else:
                ms = pick(bufs, idx)
                torch._foreach_mul_(ms, beta)
                torch._foreach_add_(ms, gs, alpha=1.0 - beta)
            scale = w / (1.0 - beta**t) if bc else w
            if mix is None:
                mix = torch._foreach_mul(ms, scale)
            else:
                torch._foreach_add_(mix, ms, alpha=scale)
        torch._foreach_addcdiv_(ps, mix, denom, value=-lr)


@OPTIMIZERS.register("aggmo-adam")
class AggMoAdam(BenchOptimizer):
    r"""AggMo-Adam: Adam whose first moment is a weighted mix of K EMAs.

    Nothing official exists; this is the project's definition. For each parameter :math:`p` with
    gradient :math:`g`, at its own step :math:`t` (1 at the first update):

    .. math::
        p &\leftarrow p\,(1 - \eta\lambda) \\
        v &\leftarrow \beta_2 v + (1-\beta_2) g^2 \\
        m_i &\leftarrow \beta^{(i)} m_i + (1-\beta^{(i)}) g
            \qquad (m_i := g \text{ if } \beta^{(i)} = 0), \quad i = 1..K \\
        \hat m_i &= m_i / (1 - (\beta^{(i)})^t) \text{ if } c_i \text{ else } m_i \\
        p &\leftarrow p - \eta\, \frac{\sum_i w_i \hat m_i}{\sqrt{v}/\sqrt{1-\beta_2^t} + \epsilon}

    Symbols: :math:`\eta` = ``lr``; :math:`\beta^{(i)}` = ``betas[i-1]`` (any number K >= 1);
    :math:`\beta_2` = ``beta2``; :math:`\epsilon` = ``eps``; :math:`\lambda` = ``weight_decay``
    (decoupled, scaled by the current lr, like AdamW); :math:`w_i` = ``weights[i-1]`` (``None``:
    1/K each); :math:`c_i` = ``bias_correct[i-1]`` (``None``: True each).

    It contains the baselines exactly: ``betas=(b1,)`` is AdamW; ``betas=(b1, b3)``,
    ``weights=(1, alpha)``, ``bias_correct=(True, False)`` is AdEMAMix without schedulers. AggMo's
    own raw-sum dynamics correspond to :math:`w_i \propto 1/(1-\beta^{(i)})` normalised to sum 1,
    with ``bias_correct`` all False.
    """

    paper = (
        "the project's definition, combining Lucas et al., Aggregated Momentum, "
        "ICLR 2019 with Adam's second moment"
    )
    state_memory = "m_i for each nonzero beta, v: (K + 1) x params (3 x for the default betas)"

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: Sequence[float] = (0.0, 0.9, 0.99),
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        weights: Sequence[float] | None = None,
        bias_correct: Sequence[bool] | None = None,
        *,
        foreach: bool | None = None,
        fused: bool | None = None,
    ):
        check_lr(lr)
        _check_beta_list(betas)
        check_beta("beta2", beta2)
        check_nonneg("eps", eps)
        check_nonneg("weight_decay", weight_decay)
        _check_weights(weights, len(betas))
        _check_flags(bias_correct, len(betas))
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "beta2": beta2,
            "eps": eps,
            "weight_decay": weight_decay,
            "weights": None if weights is None else tuple(float(w) for w in weights),
            "bias_correct": None if bias_correct is None else tuple(bias_correct),
            "foreach": foreach,
            "fused": fused,
        }
        super().__init__(params, defaults)

    def _step_group(self, group: dict, params: list[Tensor]) -> None:
        betas = group["betas"]
        k = len(betas)
        # None is resolved per step, so a group may carry its own number of betas
        weights = group["weights"] if group["weights"] is not None else (1.0 / k,) * k
        bias_correct = group["bias_correct"] if group["bias_correct"] is not None else (True,) * k
        _check_weights(weights, k)
        _check_flags(bias_correct, k)
        fast = self.begin_group(group, params)
        per_param, sqs, steps = [], [], []
        for p in params:
            state = self.state[p]
            if "step" not in state:
                state["step"] = 0
                state["exp_avg_sq"] = self.new_state(p)
            state["step"] += 1
            per_param.append(_buffers(state, p, betas, "exp_avg", False, self.new_state))
            sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        fn = self.implementation(
            fast,
            group,
            params,
            _fast_steps.aggmo_adam,
            _multi_tensor_aggmo_adam,
            _single_tensor_aggmo_adam,
        )
        fn(
            params,
            [p.grad for p in params],
            [list(bufs) for bufs in zip(*per_param)],
            sqs,
            steps,
            lr=float(group["lr"]),
            betas=betas,
            beta2=group["beta2"],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            weights=weights,
            bias_correct=bias_correct,
        )
