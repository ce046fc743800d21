"""Helpers the per-optimizer conformance tests share: parameters, gradient streams, fresh grads."""

from __future__ import annotations

import torch

#: one parameter of each kind the conformance plan asks for: 2-D, 1-D, 4-D, 0-D
SHAPES = [(4, 3), (5,), (2, 3, 2, 2), ()]
NONE_AT = (7, 1)  # (step, parameter) whose grad is None
ZERO_AT = (12, 0)  # (step, parameter) whose grad is all zeros


def make_params(dtype: torch.dtype, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=dtype).requires_grad_() for s in SHAPES]


def clone_params(params: list[torch.Tensor]) -> list[torch.Tensor]:
    return [p.detach().clone().requires_grad_() for p in params]


def gradients(dtype: torch.dtype, steps: int) -> list[list[torch.Tensor | None]]:
    """A fixed sequence of gradients, one list per step, with one None and one all-zero entry."""
    gen = torch.Generator().manual_seed(1)
    seq: list[list[torch.Tensor | None]] = []
    for t in range(steps):
        row: list[torch.Tensor | None] = [
            torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in SHAPES
        ]
        if t == NONE_AT[0]:
            row[NONE_AT[1]] = None
        if t == ZERO_AT[0]:
            row[ZERO_AT[1]] = torch.zeros_like(row[ZERO_AT[1]])
        seq.append(row)
    return seq


def set_grads(params: list[torch.Tensor], grads: list) -> None:
    """A fresh gradient tensor for every parameter and step: several references (and
    torch_optimizer's AggMo, schedulefree) write into ``p.grad``."""
    for p, g in zip(params, grads):
        p.grad = None if g is None else g.clone()
