"""AdamW against torch.optim.AdamW (loop and foreach), as the conformance plan asks."""

from __future__ import annotations

import math

import pytest
import torch

from bench_cli.registry import build_optimizer

SHAPES = [(5, 4), (4,), (2, 3, 2, 2), ()]


def _run(make, dtype, steps=30, amsgrad=False, eps=1e-8):
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=g, dtype=dtype).requires_grad_() for s in SHAPES]
    groups = [{"params": params[:2]}, {"params": params[2:], "weight_decay": 0.0, "lr": 3e-3}]
    opt = make(groups, eps=eps, amsgrad=amsgrad)
    lr0 = [grp["lr"] for grp in opt.param_groups]
    history = []
    for t in range(steps):
        for grp, base in zip(opt.param_groups, lr0):
            grp["lr"] = base * 0.5 * (1 + math.cos(math.pi * t / steps))  # decay must follow it
        for i, p in enumerate(params):
            grad = torch.randn(p.shape, generator=g, dtype=dtype)
            if t == 5 and i == 1:
                grad = None  # skipped: no decay, no step increment
            elif t == 7 and i == 0:
                grad = torch.zeros_like(p)  # a real step
            p.grad = grad
        opt.step()
        history.append([p.detach().clone() for p in params])
    return history, opt, params


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("eps", [1e-8, 1e-3])
@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    ("dtype", "rtol", "atol"), [(torch.float64, 1e-12, 1e-14), (torch.float32, 1e-5, 1e-6)]
)
def test_matches_torch_adamw_after_every_step(foreach, dtype, rtol, atol, amsgrad, eps) -> None:
    def ours(groups, **kw):
        return build_optimizer(
            "adamw", groups, lr=1e-2, betas=(0.9, 0.999), weight_decay=0.1, foreach=foreach, **kw
        )

    def reference(groups, **kw):
        return torch.optim.AdamW(
            groups, lr=1e-2, betas=(0.9, 0.999), weight_decay=0.1, foreach=foreach, **kw
        )

    got, opt, params = _run(ours, dtype, amsgrad=amsgrad, eps=eps)
    want, ref, ref_params = _run(reference, dtype, amsgrad=amsgrad, eps=eps)
    for step, (a, b) in enumerate(zip(got, want)):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=rtol, atol=atol, msg=f"step {step}")
    for p, q in zip(params, ref_params):
        assert opt.state[p]["step"] == int(ref.state[q]["step"])  # the None step was skipped
        torch.testing.assert_close(
            opt.state[p]["exp_avg_sq"], ref.state[q]["exp_avg_sq"], rtol=rtol, atol=atol
        )


def test_first_step_is_lr_times_sign() -> None:
    p = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64, requires_grad=True)
    opt = build_optimizer("adamw", [p], lr=0.1, weight_decay=0.0)
    p.grad = torch.tensor([0.5, -4.0, 1e-3], dtype=torch.float64)
    opt.step()
    torch.testing.assert_close(
        p.detach(), torch.tensor([0.9, -1.9, 2.9], dtype=torch.float64), rtol=0, atol=1e-6
    )
