"""MARS: variance-reduced (STORM-style) gradient correction, clipped, fed to AdamW or Lion."""

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
    group_by,
    pick,
)
from bench_cli.registry.adamw import _multi_tensor_adamw, _single_tensor_adamw

MARS_TYPES = ("mars-adamw", "mars-lion")

#: arguments that hold for the whole optimizer, as in the official code (never per param group)
OPTIMIZER_WIDE = (
    "eps",
    "gamma",
    "is_approx",
    "mars_type",
    "optimize_1d",
    "lr_1d",
    "betas_1d",
    "weight_decay_1d",
)

# the functional signatures' positional lists: param, grad, m, v, g_prev, next g_prev, step
_MARS_LISTS = ("p", "g", "m", "v", "prev", "next", "t")
_ADAMW_LISTS = ("p", "g", "m", "v", "t")


def _single_tensor_mars(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor | None],
    last_grads: list[Tensor],
    next_last_grads: list[Tensor],
    steps: list[int],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    gamma: float,
    mars_type: str,
) -> None:
    """The reference MARS branch: one parameter at a time, one line per equation."""
    scale = gamma * (beta1 / (1.0 - beta1))
    for p, g, m, v, g_prev, g_next, t in zip(
        params, grads, exp_avgs, exp_avg_sqs, last_grads, next_last_grads, steps
    ):
        c = g.sub(g_prev).mul_(scale).add_(g)  # c = g + gamma b1/(1-b1) (g - g_prev)
        c.div_(torch.linalg.vector_norm(c).clamp_(min=1.0))  # c / max(1, ||c||), no host sync
        m.mul_(beta1).add_(c, alpha=1.0 - beta1)
        if mars_type == "mars-adamw":
            v.mul_(beta2).addcmul_(c, c, value=1.0 - beta2)  # c^2 (the code), not g^2 (README)
            bc1, bc2 = 1.0 - beta1**t, 1.0 - beta2**t
            denom = v.sqrt().div_(math.sqrt(bc2)).add_(eps).mul_(bc1)  # eps after bc2, as AdamW
            update = m.div(denom)
        else:  # mars-lion
            update = m.sign()
        if weight_decay != 0.0:
            update.add_(p, alpha=weight_decay)  # decoupled: p before the update, times lr below
        p.add_(update, alpha=-lr)
        g_prev.copy_(g_next)  # a copy: in-place zeroing of p.grad cannot corrupt g_prev


def _correction(gs: list[Tensor], g_prevs: list[Tensor], scale: float) -> list[Tensor]:
    """c = g + gamma b1/(1-b1) (g - g_prev), for a list of tensors."""
    cs = torch._foreach_sub(gs, g_prevs)
    torch._foreach_mul_(cs, scale)
    torch._foreach_add_(cs, gs)
    return cs


def _clip_factors(grads, last_grads, keys, params, scale: float) -> list[Tensor]:
    """max(1, ||c||) for each whole tensor, summing squared norms over its CPU blocks."""
    squares: list[Tensor | None] = [None] * len(params)
    for idx in group_by(keys, params):
        norms = torch._foreach_norm(_correction(pick(grads, idx), pick(last_grads, idx), scale))
        for i, n in zip(idx, norms):
            squares[i] = n * n if squares[i] is None else squares[i] + n * n
    return [sq.sqrt().clamp_(min=1.0) for sq in squares]


def _multi_tensor_mars(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor | None],
    last_grads: list[Tensor],
    next_last_grads: list[Tensor],
    steps: list[int],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    gamma: float,
    mars_type: str,
) -> None:
    """The same MARS branch with ``torch._foreach_*`` ops, one bucket per (device, dtype, step).

    On CPU the buckets are cache-sized blocks, so the per-tensor clipping norm is summed over a
    tensor's blocks in a first pass; elsewhere it is taken on whole tensors in the same pass.
    """
    scale = gamma * (beta1 / (1.0 - beta1))
    keys = [(p.device, p.dtype, t) for p, t in zip(params, steps)]
    blocked = all(p.device.type == "cpu" for p in params)
    factors = _clip_factors(grads, last_grads, keys, params, scale) if blocked else None
    for idx in group_by(keys, params, block=blocked):
        t = steps[idx[0]]
        ps, gs, ms = pick(params, idx), pick(grads, idx), pick(exp_avgs, idx)
        g_prevs, g_nexts = pick(last_grads, idx), pick(next_last_grads, idx)
        cs = _correction(gs, g_prevs, scale)
        if factors is None:
            clip = torch._foreach_norm(cs)
            torch._foreach_clamp_min_(clip, 1.0)
        else:
            clip = [factors[i] for i in idx]
        torch._foreach_div_(cs, clip)  # c / max(1, ||c||), no host sync
        torch._foreach_mul_(ms, beta1)
        torch._foreach_add_(ms, cs, alpha=1.0 - beta1)
        if mars_type == "mars-adamw":
            vs = pick(exp_avg_sqs, idx)
            torch._foreach_mul_(vs, beta2)
            torch._foreach_addcmul_(vs, cs, cs, value=1.0 - beta2)
            bc1, bc2 = 1.0 - beta1**t, 1.0 - beta2**t
            denom = torch._foreach_sqrt(vs)
            torch._foreach_div_(denom, math.sqrt(bc2))
            torch._foreach_add_(denom, eps)
            torch._foreach_mul_(denom, bc1)
            update = torch._foreach_div(ms, denom)
        else:
            update = torch._foreach_sign(ms)
        if weight_decay != 0.0:
            torch._foreach_add_(update, ps, alpha=weight_decay)
        torch._foreach_add_(ps, update, alpha=-lr)
        torch._foreach_copy_(g_prevs, g_nexts)


def _check_pair(name: str, betas) -> None:
    check(
        isinstance(betas, (tuple, list)) and len(betas) == 2,
        f"{name} must be a sequence of 2 numbers, got {betas!r}",
    )
    for i, beta in enumerate(betas):
        check_beta(f"{name}[{i}]", beta)


@OPTIMIZERS.register("mars")
class MARS(BenchOptimizer):
    r"""MARS (Yuan et al., 2024), as the official ``MARS/optimizers/mars.py`` computes it.

    A parameter takes the **MARS branch** iff ``optimize_1d`` is true or it is exactly 2-D; every
    other tensor (biases, norms, 0-D scalars, 3-D/4-D conv kernels) takes the **AdamW branch**.

    MARS branch, for a parameter :math:`p` with gradient :math:`g` at its own step :math:`t`
    (1 at the first update), :math:`b_i = 1 - \beta_i^t`, :math:`g_{prev} = 0` at :math:`t = 1`:

    .. math::
        c &= g + \gamma \frac{\beta_1}{1-\beta_1} (g - g_{prev}) \\
        c &\leftarrow c / \max(1, \|c\|_2) \qquad \text{(Frobenius norm of this one tensor)} \\
        m &\leftarrow \beta_1 m + (1-\beta_1) c \\
        v &\leftarrow \beta_2 v + (1-\beta_2) c^2 \qquad \text{(mars-adamw only)} \\
        p &\leftarrow p - \eta \Big( \lambda p + \frac{m}{b_1 (\sqrt{v}/\sqrt{b_2} + \epsilon)}
            \Big) \quad \text{(mars-adamw)}, \qquad
        p \leftarrow p - \eta (\lambda p + \operatorname{sign}(m)) \quad \text{(mars-lion)}

    In the step from :math:`x_k` with batch :math:`\xi_k`, :math:`g = \nabla f(x_k, \xi_k)` and
    :math:`g_{prev}` is the previous step's gradient :math:`\nabla f(x_{k-1}, \xi_{k-1})`
    (approximate variant) or the same batch at the previous point,
    :math:`\nabla f(x_{k-1}, \xi_k)` (exact variant, see below). A zero gradient still moves
    :math:`p` through :math:`g_{prev}`.

    AdamW branch: torch AdamW on :math:`g` (no correction, no clipping) with
    :math:`\eta_{1d} = \eta \cdot \eta^{1d}/\eta_0`:

    .. math::
        p \leftarrow p (1 - \eta_{1d} \lambda_{1d}), \quad
        m \leftarrow \beta^{1d}_1 m + (1-\beta^{1d}_1) g, \quad
        v \leftarrow \beta^{1d}_2 v + (1-\beta^{1d}_2) g^2, \quad
        p \leftarrow p - \frac{\eta_{1d}}{b^{1d}_1} \frac{m}{\sqrt{v}/\sqrt{b^{1d}_2} + \epsilon}

    Symbols: :math:`\eta` = the group's current ``lr``; :math:`\eta_0` = the constructor's ``lr``
    (so a schedule on the group lr scales the 1-D lr in proportion); :math:`\beta_1, \beta_2` =
    the group's ``betas``; :math:`\lambda` = the group's ``weight_decay``; :math:`\gamma` =
    ``gamma``; :math:`\epsilon` = ``eps``; :math:`\eta^{1d}` = ``lr_1d``;
    :math:`\beta^{1d}_1, \beta^{1d}_2` = ``betas_1d``; :math:`\lambda_{1d}` = ``weight_decay_1d``
    (the constructor's, applied even in a group with ``weight_decay=0``). ``eps``, ``gamma``,
    ``mars_type``, ``optimize_1d``, ``is_approx`` and the ``*_1d`` arguments are optimizer-wide, as
    in the official code; setting one in a param group is an error.

    ``optimize_1d="auto"`` (the benchmark's recipe) decides once, at construction: True when no
    parameter given is exactly 2-D (a task of vectors only, such as the valleys, then runs the MARS
    update rather than plain AdamW), else the official False. ``branches`` counts the tensors on
    each branch, so a record can say which update ran.

    Exact variant (``is_approx=False``, ``needs_lookahead_grad`` is true): the run loop supplies
    the gradient of the *next* batch at the *current* point. Each step is: gradient on the next
    batch, ``store_lookahead_grad()``, ``zero_grad()``, gradient on the current batch, clip (the
    recipe's global clip applies to both gradients), ``step()``. At the end of ``step()`` the
    stored :math:`\nabla f(x_k, \xi_{k+1})` becomes the next step's :math:`g_{prev}`.

    Deliberate difference from the official code: :math:`g_{prev}` (state ``last_grad``) is a copy,
    not a reference to ``p.grad``, so ``zero_grad(set_to_none=False)`` cannot corrupt it; with
    ``set_to_none=True`` the two agree. Only the buffers a tensor's branch uses are allocated
    (no ``exp_avg_sq`` for mars-lion, no ``last_grad`` on the AdamW branch).
    """

    paper = (
        "Yuan, Liu, Wu, Zhou & Gu, MARS: Unleashing the Power of Variance Reduction for Training "
        "Large Models, arXiv:2411.10438, 2024 (official code: AGI-Arena/MARS)"
    )
    state_memory = (
        "MARS branch m, v, g_prev: 3 x params (mars-lion: 2 x; exact variant: +1 x for the "
        "next batch's grad); AdamW branch m, v: 2 x"
    )

    def __init__(
        self,
        params,
        lr: float = 3e-3,
        betas: tuple[float, float] = (0.95, 0.99),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        gamma: float = 0.025,
        is_approx: bool = True,
        mars_type: str = "mars-adamw",
        optimize_1d: bool | str = False,
        lr_1d: float = 3e-3,
        betas_1d: tuple[float, float] = (0.9, 0.95),
        weight_decay_1d: float = 0.1,
        *,
        foreach: bool | None = None,
        fused: bool | None = None,
    ):
        check_lr(lr)
        lr_0 = float(lr)
        check(lr_0 > 0.0, f"lr must be > 0 (the 1-D lr is scaled by lr_1d / lr), got {lr!r}")
        check_betas(betas, 2)
        check_nonneg("eps", eps)
        check_nonneg("weight_decay", weight_decay)
        check_nonneg("gamma", gamma)
        check(isinstance(is_approx, bool), f"is_approx must be a bool, got {is_approx!r}")
        check(
            mars_type in MARS_TYPES,
            f"mars_type must be one of {', '.join(map(repr, MARS_TYPES))}, got {mars_type!r}",
        )
        check(
            isinstance(optimize_1d, bool) or optimize_1d == "auto",
            f"optimize_1d must be True, False or 'auto', got {optimize_1d!r}",
        )
        check_nonneg("lr_1d", lr_1d)
        _check_pair("betas_1d", betas_1d)
        check_nonneg("weight_decay_1d", weight_decay_1d)
        self.eps = eps
        self.gamma = gamma
        self.is_approx = is_approx
        self.mars_type = mars_type
        self.optimize_1d = optimize_1d
        self.lr_1d_factor = lr_1d / lr_0  # fixed from the constructor lr, as in the official code
        self.betas_1d = tuple(betas_1d)
        self.weight_decay_1d = weight_decay_1d
        self.needs_lookahead_grad = not is_approx
        self.grad_evals_per_step = 1 if is_approx else 2  # exact: + the next batch's gradient
        self._lookahead_stored = False
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "weight_decay": weight_decay,
            "foreach": foreach,
            "fused": fused,
        }
        super().__init__(params, defaults)
        if optimize_1d == "auto":  # decided once, from the parameters given at construction
            self.optimize_1d = not any(p.ndim == 2 for p in self._all_params())

    def _all_params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    @property
    def branches(self) -> dict[str, int]:
        """How many parameter tensors take each branch: ``{"mars": n, "adamw": m}``."""
        params = self._all_params()
        mars = sum(1 for p in params if self.takes_mars_branch(p))
        return {"mars": mars, "adamw": len(params) - mars}

    def add_param_group(self, param_group: dict) -> None:
        for key in OPTIMIZER_WIDE:
            check(key not in param_group, f"{key} is optimizer-wide in MARS; pass it to MARS()")
        super().add_param_group(param_group)

    def takes_mars_branch(self, p: Tensor) -> bool:
        """The official rule: MARS for exactly-2-D tensors, or for every tensor with optimize_1d."""
        return self.optimize_1d or p.ndim == 2

    @torch.no_grad()
    def store_lookahead_grad(self) -> None:
        """Exact variant: keep each ``p.grad`` (next batch, current point) for the next g_prev.

        A parameter whose grad is None here is not reached by the next batch: its stored
        gradient is zero.
        """
        if self.is_approx:
            raise RuntimeError("store_lookahead_grad() is only for MARS(is_approx=False)")
        for group in self.param_groups:
            for p in group["params"]:
                if not self.takes_mars_branch(p):
                    continue  # the AdamW branch has no g_prev
                state = self.state[p]
                if p.grad is None:
                    if "previous_grad" in state:
                        state["previous_grad"].zero_()
                elif "previous_grad" in state:
                    state["previous_grad"].copy_(p.grad)
                else:
                    state["previous_grad"] = self.new_state(p).copy_(p.grad)
        self._lookahead_stored = True

    @torch.no_grad()
    def step(self, closure=None):
        if not self.is_approx and not self._lookahead_stored:
            raise RuntimeError(
                "MARS(is_approx=False) needs store_lookahead_grad() before every step(): "
                "grad on the next batch, store_lookahead_grad(), zero_grad(), grad, step()"
            )
        loss = super().step(closure)
        self._lookahead_stored = False
        return loss

    def _init_state(self, state: dict, p: Tensor, mars_branch: bool) -> None:
        def zeros() -> Tensor:
            return self.new_state(p)

        state["step"] = 0
        state["exp_avg"] = zeros()
        if not mars_branch or self.mars_type == "mars-adamw":
            state["exp_avg_sq"] = zeros()
        if mars_branch:
            state["last_grad"] = zeros()  # g_prev = 0 at t = 1

    def _lookahead(self, state: dict, p: Tensor) -> Tensor:
        """The stored next-batch grad; zero if the next batches never reached ``p``."""
        if "previous_grad" not in state:
            state["previous_grad"] = self.new_state(p)
        return state["previous_grad"]

    def _step_group(self, group: dict, params: list[Tensor]) -> None:
        fast = self.begin_group(group, params)
        mars: dict[str, list] = {k: [] for k in _MARS_LISTS}
        adamw: dict[str, list] = {k: [] for k in _ADAMW_LISTS}
        for p in params:
            state = self.state[p]
            mars_branch = self.takes_mars_branch(p)
            if "step" not in state:  # previous_grad may already be there (exact variant)
                self._init_state(state, p, mars_branch)
            state["step"] += 1
            bucket = mars if mars_branch else adamw
            bucket["p"].append(p)
            bucket["g"].append(p.grad)
            bucket["m"].append(state["exp_avg"])
            bucket["v"].append(state.get("exp_avg_sq"))
            bucket["t"].append(state["step"])
            if mars_branch:
                bucket["prev"].append(state["last_grad"])
                bucket["next"].append(p.grad if self.is_approx else self._lookahead(state, p))
        foreach = self.use_foreach(group, params)
        lr = float(group["lr"])
        if mars["p"]:
            beta1, beta2 = group["betas"]
            fn = _fast_steps.mars if fast else _multi_tensor_mars if foreach else _single_tensor_mars
            fn(
                *(mars[k] for k in _MARS_LISTS),
                lr=lr,
                beta1=beta1,
                beta2=beta2,
                eps=self.eps,
                weight_decay=group["weight_decay"],
                gamma=self.gamma,
                mars_type=self.mars_type,
            )
        if adamw["p"]:
            beta1, beta2 = self.betas_1d
            # the AdamW branch is exactly AdamW(lr_1d, betas_1d, weight_decay_1d): reuse it
            fn_1d = (
                _fast_steps.adamw
                if fast
                else _multi_tensor_adamw if foreach else _single_tensor_adamw
            )
            p, g, m, v, t = (adamw[k] for k in _ADAMW_LISTS)
            fn_1d(
                p,
                g,
                m,
                v,
                [None] * len(p),
                t,
                amsgrad=False,
                lr=lr * self.lr_1d_factor,
                beta1=beta1,
                beta2=beta2,
                eps=self.eps,
                weight_decay=self.weight_decay_1d,
            )
