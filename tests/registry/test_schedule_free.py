"""Schedule-Free AdamW against schedulefree 1.4.1 (the official code): y, z and x, every step."""

from __future__ import annotations

import copy
import re

import pytest
import torch

from bench_cli.registry import build_optimizer
from bench_cli.registry.schedule_free import ScheduleFreeAdamW
from tests.registry.harness import clone_params, make_params, set_grads

schedulefree = pytest.importorskip("schedulefree")

STEPS = 14  # warmup_steps 5, so most steps are past the warmup
LATE_PARAM = 3  # no gradient on step 0: its z starts at y on step 1
NONE_STEP, NONE_PARAM = 4, 1  # this parameter has grad None on this step
ZERO_STEP, ZERO_PARAM = 6, 0  # this parameter's gradient is all zeros on this step
ROUND_TRIP_STEP = 8  # eval() (compare x) then train() before this step
EMPTY_GROUP_STEP = 10  # no parameter of group 1 has a gradient: its k must still advance
LR_DROP_STEP = 11  # an outside schedule lowers group 0's lr: the weights still use lr_max
TOLERANCES = {
    torch.float64: {"rtol": 1e-10, "atol": 1e-12},
    torch.float32: {"rtol": 1e-5, "atol": 1e-6},
}
GROUP_SCALARS = ("k", "lr_max", "weight_sum", "scheduled_lr")


def groups(params: list[torch.Tensor]) -> list[dict]:
    """Two groups: decayed at the default betas, and undecayed with other betas and lr."""
    return [
        {"params": params[:2], "lr": 2e-2, "weight_decay": 0.1},
        {"params": params[2:], "lr": 1e-2, "weight_decay": 0.0, "betas": (0.95, 0.99)},
    ]


def make_grads(params: list[torch.Tensor], step: int, gen: torch.Generator) -> list:
    grads = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
    if step == 0:
        grads[LATE_PARAM] = None
    if step == NONE_STEP:
        grads[NONE_PARAM] = None
    if step == ZERO_STEP:
        grads[ZERO_PARAM] = torch.zeros_like(grads[ZERO_PARAM])
    if step == EMPTY_GROUP_STEP:
        grads[2] = grads[3] = None
    return grads


def run_steps(
    opt: torch.optim.Optimizer, params: list[torch.Tensor], steps: int, seed: int
) -> None:
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        set_grads(params, make_grads(params, step, gen))
        opt.step()


def assert_same(ours, ours_p, ref, ref_p, tol: dict) -> None:
    """Parameters (y or x, whichever they hold), every z, and the group scalars."""
    for p, q in zip(ours_p, ref_p):
        torch.testing.assert_close(p, q, **tol)
        if "z" in ref.state[q]:
            torch.testing.assert_close(ours.state[p]["z"], ref.state[q]["z"], **tol)
            torch.testing.assert_close(
                ours.state[p]["exp_avg_sq"], ref.state[q]["exp_avg_sq"], **tol
            )
        else:
            assert len(ours.state[p]) == 0
    for g, h in zip(ours.param_groups, ref.param_groups):
        for key in GROUP_SCALARS + ("train_mode",):
            assert g[key] == pytest.approx(h[key], rel=1e-12), key


@pytest.mark.parametrize(("r", "weight_lr_power"), [(0.0, 2.0), (0.75, 2.0), (0.0, 0.0)])
@pytest.mark.parametrize("foreach", [False, True], ids=["loop", "foreach"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_matches_schedulefree_y_z_x_every_step(
    dtype: torch.dtype, foreach: bool, r: float, weight_lr_power: float
) -> None:
    tol = TOLERANCES[dtype]
    hparams = {"warmup_steps": 5, "r": r, "weight_lr_power": weight_lr_power}
    ours_p = make_params(dtype)
    ref_p = clone_params(ours_p)
    ours = ScheduleFreeAdamW(groups(ours_p), **hparams, foreach=foreach)
    ref = schedulefree.AdamWScheduleFree(groups(ref_p), **hparams, foreach=foreach)
    ours.train()
    ref.train()
    gen = torch.Generator().manual_seed(1)
    for step in range(STEPS):
        if step == ROUND_TRIP_STEP:
            ours.eval()
            ref.eval()
            assert_same(ours, ours_p, ref, ref_p, tol)  # x
            ours.train()
            ref.train()
        if step == LR_DROP_STEP:
            ours.param_groups[0]["lr"] *= 0.25
            ref.param_groups[0]["lr"] *= 0.25
        grads = make_grads(ours_p, step, gen)
        set_grads(ours_p, grads)
        set_grads(ref_p, grads)
        ours.step()
        ref.step()
        assert_same(ours, ours_p, ref, ref_p, tol)  # y
    ours.eval()
    ref.eval()
    assert_same(ours, ours_p, ref, ref_p, tol)  # x


def test_foreach_equals_loop() -> None:
    loop_p = make_params(torch.float64)
    fe_p = clone_params(loop_p)
    hparams = {"warmup_steps": 5, "r": 0.75, "weight_decay": 0.1}
    loop = ScheduleFreeAdamW(groups(loop_p), **hparams, foreach=False)
    fe = ScheduleFreeAdamW(groups(fe_p), **hparams, foreach=True)
    loop.train()
    fe.train()
    run_steps(loop, loop_p, STEPS, seed=2)
    run_steps(fe, fe_p, STEPS, seed=2)
    loop.eval()
    fe.eval()
    for p, q in zip(loop_p, fe_p):
        torch.testing.assert_close(p, q, rtol=1e-15, atol=0)
        for key in ("z", "exp_avg_sq"):
            torch.testing.assert_close(loop.state[p][key], fe.state[q][key], rtol=1e-15, atol=0)


def test_step_before_train_raises() -> None:
    p = torch.zeros(3, requires_grad=True)
    opt = ScheduleFreeAdamW([p])
    assert opt.param_groups[0]["train_mode"] is False  # constructed in eval mode
    p.grad = torch.ones(3)
    with pytest.raises(RuntimeError, match=r"optimizer\.train\(\)"):
        opt.step()
    opt.train()
    opt.step()
    opt.eval()
    with pytest.raises(RuntimeError, match=r"optimizer\.train\(\)"):
        opt.step()


@pytest.mark.parametrize("foreach", [False, True], ids=["loop", "foreach"])
def test_step_leaves_grad_unchanged(foreach: bool) -> None:
    params = make_params(torch.float64)
    opt = ScheduleFreeAdamW(params, weight_decay=0.1, foreach=foreach)
    opt.train()
    gen = torch.Generator().manual_seed(4)
    for _step in range(3):
        grads = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
        for p, g in zip(params, grads):
            p.grad = g
        kept = [g.clone() for g in grads]
        opt.step()
        for p, g, g0 in zip(params, grads, kept):
            assert p.grad is g
            assert torch.equal(p.grad, g0)


def test_train_and_eval_are_idempotent() -> None:
    params = make_params(torch.float64)
    opt = ScheduleFreeAdamW(params, lr=0.1)
    opt.eval()  # already in eval mode: nothing to do, and no state yet anyway
    opt.train()
    run_steps(opt, params, 3, seed=5)
    y = [p.detach().clone() for p in params]
    opt.train()
    assert all(torch.equal(p, q) for p, q in zip(params, y))
    opt.eval()
    x = [p.detach().clone() for p in params]
    assert not all(torch.equal(p, q) for p, q in zip(x, y))  # x differs from y after 3 steps
    opt.eval()
    assert all(torch.equal(p, q) for p, q in zip(params, x))
    opt.train()  # round trip back to y, up to rounding
    for p, q in zip(params, y):
        torch.testing.assert_close(p.detach(), q, rtol=1e-14, atol=1e-15)


def test_state_dict_roundtrip_gives_same_next_step() -> None:
    hparams = {"warmup_steps": 5, "r": 0.75, "weight_decay": 0.1}
    params = make_params(torch.float64)
    opt = ScheduleFreeAdamW(groups(params), **hparams)
    opt.train()
    run_steps(opt, params, 3, seed=6)
    saved = copy.deepcopy(opt.state_dict())
    resumed_p = clone_params(params)  # the model's weights, saved in train mode (they hold y)
    resumed = ScheduleFreeAdamW(groups(resumed_p), **hparams)
    resumed.load_state_dict(saved)
    assert resumed.param_groups[0]["train_mode"] is True  # the mode travels with the state
    for key in GROUP_SCALARS:
        assert resumed.param_groups[1][key] == opt.param_groups[1][key]
    gen = torch.Generator().manual_seed(7)
    for step in range(3, 6):
        grads = make_grads(params, step, gen)
        set_grads(params, grads)
        set_grads(resumed_p, grads)
        opt.step()
        resumed.step()
        for p, q in zip(params, resumed_p):
            assert torch.equal(p, q)
            assert torch.equal(opt.state[p]["z"], resumed.state[q]["z"])
    opt.eval()
    resumed.eval()
    assert all(torch.equal(p, q) for p, q in zip(params, resumed_p))


def test_warmup_and_weights_follow_the_group_step() -> None:
    p = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = ScheduleFreeAdamW([p], lr=1e-2, warmup_steps=4, r=0.0, weight_lr_power=2.0)
    opt.train()
    for k in range(6):
        p.grad = torch.ones(2, dtype=torch.float64)
        opt.step()
        group = opt.param_groups[0]
        assert group["k"] == k + 1
        assert group["scheduled_lr"] == pytest.approx(1e-2 * min(1.0, (k + 1) / 4), rel=1e-15)
        assert group["lr_max"] == pytest.approx(1e-2 * min(1.0, (k + 1) / 4), rel=1e-15)


def test_registry_builds_schedule_free_with_official_defaults() -> None:
    opt = build_optimizer("schedule_free", [torch.zeros(2, requires_grad=True)])
    assert type(opt) is ScheduleFreeAdamW
    assert ScheduleFreeAdamW.has_train_eval_modes and ScheduleFreeAdamW.owns_warmup
    group = opt.param_groups[0]
    want = {
        "lr": 0.0025,
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "weight_decay": 0.0,
        "warmup_steps": 0,
        "r": 0.0,
        "weight_lr_power": 2.0,
        "k": 0,
        "lr_max": -1.0,
        "weight_sum": 0.0,
        "train_mode": False,
    }
    assert {key: group[key] for key in want} == want


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"betas": (0.0, 0.999)}, "betas[0]"),
        ({"betas": (1.0, 0.999)}, "betas[0]"),
        ({"betas": (0.9, 1.0)}, "betas[1]"),
        ({"lr": -1e-3}, "lr"),
        ({"eps": -1e-8}, "eps"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"warmup_steps": 2.5}, "warmup_steps"),
        ({"r": -1.0}, "r"),
        ({"weight_lr_power": -2.0}, "weight_lr_power"),
    ],
)
def test_invalid_arguments_raise_naming_the_argument(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{re.escape(name)} "):  # the message names it first
        ScheduleFreeAdamW([torch.zeros(2, requires_grad=True)], **kwargs)
