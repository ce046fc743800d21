"""Lion against lion-pytorch (bit-identical to google/automl), the loop against foreach, edge cases."""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch

from bench_cli.registry import build_optimizer
from bench_cli.registry.lion import Lion
from tests.registry.harness import clone_params, make_params, set_grads

lion_pytorch = pytest.importorskip("lion_pytorch")

STEPS = 16
NONE_STEP, NONE_PARAM = 4, 1  # this parameter has grad None on this step
ZERO_STEP, ZERO_PARAM = 7, 2  # this parameter's gradient is all zeros on this step
TOLERANCES = {
    torch.float64: {"rtol": 1e-10, "atol": 1e-12},
    torch.float32: {"rtol": 1e-5, "atol": 1e-6},
}


def groups(params: list[torch.Tensor]) -> list[dict]:
    """Two groups with different lr and decay; each keeps its own lr0 for the cosine schedule."""
    return [
        {"params": params[:2], "lr": 1e-2, "weight_decay": 0.5},
        {"params": params[2:], "lr": 3e-3, "weight_decay": 0.0},
    ]


def make_grads(params: list[torch.Tensor], step: int, gen: torch.Generator) -> list:
    grads = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
    if step == NONE_STEP:
        grads[NONE_PARAM] = None
    if step == ZERO_STEP:
        grads[ZERO_PARAM] = torch.zeros_like(grads[ZERO_PARAM])
    return grads


def set_cosine_lr(opt: torch.optim.Optimizer, lr0: list[float], step: int) -> None:
    for group, base in zip(opt.param_groups, lr0):
        group["lr"] = base * 0.5 * (1 + math.cos(math.pi * step / STEPS))


@pytest.mark.parametrize("foreach", [False, True], ids=["loop", "foreach"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_matches_lion_pytorch_every_step(dtype: torch.dtype, foreach: bool) -> None:
    ours_p = make_params(dtype)
    ref_p = clone_params(ours_p)
    ours = Lion(groups(ours_p), betas=(0.9, 0.99), foreach=foreach)
    ref = lion_pytorch.Lion(groups(ref_p), betas=(0.9, 0.99))  # default flags only
    lr0 = [g["lr"] for g in ours.param_groups]
    gen = torch.Generator().manual_seed(1)
    for step in range(STEPS):
        set_cosine_lr(ours, lr0, step)
        set_cosine_lr(ref, lr0, step)
        grads = make_grads(ours_p, step, gen)
        set_grads(ours_p, grads)
        set_grads(ref_p, grads)
        ours.step()
        ref.step()
        for p, q in zip(ours_p, ref_p):
            torch.testing.assert_close(p, q, **TOLERANCES[dtype])
            torch.testing.assert_close(
                ours.state[p]["exp_avg"], ref.state[q]["exp_avg"], **TOLERANCES[dtype]
            )


def test_foreach_equals_loop_bitwise() -> None:
    loop_p = make_params(torch.float64)
    fe_p = clone_params(loop_p)
    loop = Lion(groups(loop_p), foreach=False)
    fe = Lion(groups(fe_p), foreach=True)
    gen = torch.Generator().manual_seed(2)
    for step in range(STEPS):
        grads = make_grads(loop_p, step, gen)
        set_grads(loop_p, grads)
        set_grads(fe_p, grads)
        loop.step()
        fe.step()
        for p, q in zip(loop_p, fe_p):
            assert torch.equal(p, q)
            assert torch.equal(loop.state[p]["exp_avg"], fe.state[q]["exp_avg"])


@pytest.mark.parametrize("foreach", [False, True], ids=["loop", "foreach"])
def test_zero_grad_after_nonzero_moves_by_lr_sign_beta1_m(foreach: bool) -> None:
    lr, beta1, beta2 = 1e-2, 0.9, 0.99
    p = torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=torch.float64, requires_grad=True)
    opt = Lion([p], lr=lr, betas=(beta1, beta2), foreach=foreach)
    for g in ([1.0, -2.0, 0.5, 0.0], [0.3, -0.1, 0.2, 0.0]):
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    m = opt.state[p]["exp_avg"].clone()
    before = p.detach().clone()
    p.grad = torch.zeros_like(p)
    opt.step()
    # m = 0 in the last entry: sign(0) = 0, that entry stays put
    torch.testing.assert_close(p.detach(), before - lr * torch.sign(beta1 * m), rtol=0, atol=0)
    assert not torch.equal(p.detach(), before)
    torch.testing.assert_close(opt.state[p]["exp_avg"], beta2 * m, rtol=1e-15, atol=0)


@pytest.mark.parametrize("foreach", [False, True], ids=["loop", "foreach"])
def test_zero_grad_with_zero_state_does_not_move(foreach: bool) -> None:
    p = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    before = p.detach().clone()
    opt = Lion([p], lr=1e-2, foreach=foreach)
    p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.equal(p.detach(), before)
    assert torch.equal(opt.state[p]["exp_avg"], torch.zeros_like(p))


@pytest.mark.parametrize("foreach", [False, True], ids=["loop", "foreach"])
def test_zero_grad_is_a_real_step_but_none_grad_is_skipped(foreach: bool) -> None:
    lr, wd = 1e-2, 0.5
    p = torch.tensor([0.5, -1.0], dtype=torch.float64, requires_grad=True)
    q = torch.tensor([0.5, -1.0], dtype=torch.float64, requires_grad=True)
    opt = Lion([p, q], lr=lr, weight_decay=wd, foreach=foreach)
    p.grad = torch.zeros_like(p)  # decay still applies
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([0.5, -1.0]).double() * (1 - lr * wd))
    assert torch.equal(q.detach(), torch.tensor([0.5, -1.0], dtype=torch.float64))
    assert len(opt.state[q]) == 0


def test_state_dict_roundtrip_gives_same_next_step() -> None:
    params = make_params(torch.float64)
    opt = Lion(groups(params))
    gen = torch.Generator().manual_seed(3)
    for step in range(3):
        set_grads(params, make_grads(params, step, gen))
        opt.step()
    saved = copy.deepcopy(opt.state_dict())
    resumed_p = clone_params(params)
    resumed = Lion(groups(resumed_p), lr=0.5, weight_decay=0.0)  # group values come from saved
    resumed.load_state_dict(saved)
    grads = make_grads(params, 3, gen)
    set_grads(params, grads)
    set_grads(resumed_p, grads)
    opt.step()
    resumed.step()
    for p, q in zip(params, resumed_p):
        assert torch.equal(p, q)


def test_registry_builds_lion_with_official_defaults() -> None:
    opt = build_optimizer("lion", [torch.zeros(2, requires_grad=True)])
    assert type(opt) is Lion
    group = opt.param_groups[0]
    assert (group["lr"], group["betas"], group["weight_decay"]) == (1e-4, (0.9, 0.99), 0.0)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"betas": (1.0, 0.99)}, "betas[0]"),
        ({"betas": (0.9, -0.1)}, "betas[1]"),
        ({"betas": (0.9,)}, "betas"),
        ({"lr": -1e-3}, "lr"),
        ({"weight_decay": -0.1}, "weight_decay"),
    ],
)
def test_invalid_arguments_raise_naming_the_argument(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{re.escape(name)} "):  # the message names it first
        Lion([torch.zeros(2, requires_grad=True)], **kwargs)
