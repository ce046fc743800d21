"""AdamW: torch's own implementation, with the registry's declarations and argument checks."""

from __future__ import annotations

import torch

from bench_cli.registry import OPTIMIZERS
from bench_cli.registry._base import OptimizerInfo, check_betas, check_lr, check_nonneg


@OPTIMIZERS.register("adamw")
class AdamW(OptimizerInfo, torch.optim.AdamW):
    r"""AdamW (Loshchilov & Hutter 2019) exactly as ``torch.optim.AdamW`` computes it.

    For each parameter :math:`p` with gradient :math:`g`, at step :math:`t` (per parameter):

    .. math::
        p &\leftarrow p\,(1 - \eta\lambda) \\
        m &\leftarrow \beta_1 m + (1-\beta_1) g \\
        v &\leftarrow \beta_2 v + (1-\beta_2) g^2 \\
        p &\leftarrow p - \frac{\eta}{1-\beta_1^t}\,
              \frac{m}{\sqrt{v}/\sqrt{1-\beta_2^t} + \epsilon}

    Symbols: :math:`\eta` = ``lr`` (the current group lr, so decay follows the schedule),
    :math:`\beta_1, \beta_2` = ``betas``, :math:`\epsilon` = ``eps``, :math:`\lambda` =
    ``weight_decay``. The per-tensor loop and the foreach path are torch's
    (``_single_tensor_adam``/``_multi_tensor_adam``); ``fused=True`` opts into the CUDA kernel.
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
        super().__init__(
            params,
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            foreach=foreach,
            fused=fused,
        )
