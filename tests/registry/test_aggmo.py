"""AggMo against torch_optimizer.AggMo; AggMo-Adam against AdamW and AdEMAMix; their contracts."""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable

import pytest
import torch
import torch_optimizer

from bench_cli.registry import build_optimizer
from bench_cli.registry.aggmo_adam import AggMo, AggMoAdam
from tests.registry.harness import NONE_AT, SHAPES, gradients, set_grads

STEPS = 30
TOL = {torch.float64: {"rtol": 1e-12, "atol": 1e-14}, torch.float32: {"rtol": 1e-5, "atol": 1e-6}}

Build = Callable[[list[torch.Tensor]], torch.optim.Optimizer]


def initial_params(dtype: torch.dtype) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in SHAPES]


def assert_same_trajectory(
    build_a: Build, build_b: Build, dtype: torch.dtype, lr0: float, exact: bool = False
) -> None:
    """Run both on the same gradients and the same cosine lr; compare parameters every step."""
    tol = {"rtol": 0.0, "atol": 0.0} if exact else TOL[dtype]
    p_a = [p.requires_grad_() for p in initial_params(dtype)]
    p_b = [p.detach().clone().requires_grad_() for p in p_a]
    opt_a, opt_b = build_a(p_a), build_b(p_b)
    for t, grads in enumerate(gradients(dtype, STEPS)):
        lr = lr0 * (0.55 + 0.45 * math.cos(math.pi * t / STEPS))
        for group in [*opt_a.param_groups, *opt_b.param_groups]:
            group["lr"] = lr
        set_grads(p_a, grads)
        set_grads(p_b, grads)
        opt_a.step()
        opt_b.step()
        for i, (x, y) in enumerate(zip(p_a, p_b)):
            torch.testing.assert_close(x, y, **tol, msg=f"step {t}, param {i}")


# ---------------------------------------------------------------------------------------------
# AggMo

AGGMO_BETAS = {
    "default": [0.0, 0.9, 0.99],
    "exp_form_k4": [1.0 - 0.1**i for i in range(4)],
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("foreach", [False, True], ids=["loop", "foreach"])
@pytest.mark.parametrize("betas", sorted(AGGMO_BETAS))
def test_aggmo_matches_torch_optimizer(betas: str, foreach: bool, dtype: torch.dtype) -> None:
    bs = AGGMO_BETAS[betas]
    assert_same_trajectory(
        lambda ps: AggMo(ps, lr=1e-2, betas=bs, weight_decay=0.1, foreach=foreach),
        lambda ps: torch_optimizer.AggMo(ps, lr=1e-2, betas=bs, weight_decay=0.1),
        dtype,
        lr0=1e-2,
        exact=True,  # same op order: bit-identical in float64 and float32 (OPTIMIZERS.md 12)
    )


@pytest.mark.parametrize("foreach", [False, True], ids=["loop", "foreach"])
def test_aggmo_first_step_is_sgd_and_grad_is_untouched(foreach: bool) -> None:
    p0 = torch.tensor([[0.5, -1.0], [2.0, 0.1]], dtype=torch.float64)
    p = p0.clone().requires_grad_()
    g = torch.tensor([[0.3, -0.2], [1.5, 0.0]], dtype=torch.float64)
    opt = AggMo([p], lr=0.1, weight_decay=0.2, foreach=foreach)
    p.grad = g.clone()
    opt.step()
    torch.testing.assert_close(p.detach(), p0 - 0.1 * (g + 0.2 * p0), rtol=1e-15, atol=1e-16)
    torch.testing.assert_close(p.grad, g, rtol=0, atol=0)  # coupled L2 went into a temporary
    assert sorted(opt.state[p]) == [f"momentum_buffer_{i}" for i in range(3)]


def test_aggmo_from_exp_form() -> None:
    opt = AggMo.from_exp_form([torch.zeros(1, requires_grad=True)], lr=0.01, a=0.1, k=4)
    assert opt.param_groups[0]["betas"] == pytest.approx((0.0, 0.9, 0.99, 0.999))


def test_aggmo_state_dict_roundtrip_and_foreach_parity() -> None:
    seq = gradients(torch.float64, STEPS)
    runs = {}
    for name in ("loop", "foreach", "reloaded"):
        params = [p.requires_grad_() for p in initial_params(torch.float64)]
        opt = AggMo(params, lr=1e-2, weight_decay=0.1, foreach=name == "foreach")
        for t in range(STEPS):
            if name == "reloaded" and t == 15:
                saved = copy.deepcopy(opt.state_dict())
                params = [p.detach().clone().requires_grad_() for p in params]
                opt = AggMo(params, lr=1.0)
                opt.load_state_dict(saved)
            set_grads(params, seq[t])
            opt.step()
        runs[name] = params
    for name in ("foreach", "reloaded"):
        for x, y in zip(runs["loop"], runs[name]):
            torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)


# ---------------------------------------------------------------------------------------------
# AggMo-Adam


@pytest.mark.parametrize("foreach", [False, True], ids=["loop", "foreach"])
@pytest.mark.parametrize("betas", [(0.9,), (0.9, 0.9)], ids=["K1", "K2_repeated"])
def test_aggmo_adam_with_one_beta_is_adamw(betas: tuple, foreach: bool) -> None:
    kw = {"lr": 1e-2, "eps": 1e-3, "weight_decay": 0.1}
    assert_same_trajectory(
        lambda ps: AggMoAdam(ps, betas=betas, beta2=0.99, **kw, foreach=foreach),
        lambda ps: torch.optim.AdamW(ps, betas=(0.9, 0.99), **kw, foreach=False),
        torch.float64,
        lr0=1e-2,
    )


@pytest.mark.parametrize("foreach", [False, True], ids=["loop", "foreach"])
@pytest.mark.parametrize("beta1", [0.9, 0.0])
def test_aggmo_adam_with_two_betas_is_ademamix(beta1: float, foreach: bool) -> None:
    alpha, beta3 = 5.0, 0.999
    assert_same_trajectory(
        lambda ps: AggMoAdam(
            ps,
            lr=1e-2,
            betas=(beta1, beta3),
            beta2=0.99,
            weight_decay=0.1,
            weights=(1.0, alpha),
            bias_correct=(True, False),
            foreach=foreach,
        ),
        lambda ps: build_optimizer(
            "ademamix", ps, lr=1e-2, betas=(beta1, 0.99, beta3), alpha=alpha, weight_decay=0.1
        ),
        torch.float64,
        lr0=1e-2,
    )


@pytest.mark.parametrize("foreach", [False, True], ids=["loop", "foreach"])
@pytest.mark.parametrize(
    ("bias_correct", "factor"),
    [(None, 1.0), ((False, False, False), (1.0 + 0.1 + 0.01) / 3)],
    ids=["corrected", "raw"],
)
def test_aggmo_adam_first_step_size(bias_correct, factor: float, foreach: bool) -> None:
    """Defaults (0, 0.9, 0.99): every corrected m_i-hat is g, so the first step is lr sign(g)."""
    p0 = torch.tensor([0.5, -1.0, 2.0, 0.3], dtype=torch.float64)
    g = torch.tensor([3.0, -0.2, 1e-2, -40.0], dtype=torch.float64)
    p = p0.clone().requires_grad_()
    opt = AggMoAdam([p], lr=0.1, bias_correct=bias_correct, foreach=foreach)
    p.grad = g.clone()
    opt.step()
    want = p0 - 0.1 * factor * g / (g.abs() + 1e-8)
    torch.testing.assert_close(p.detach(), want, rtol=1e-14, atol=0)
    # beta = 0 keeps no buffer: m_1 := g
    assert sorted(opt.state[p]) == ["exp_avg_1", "exp_avg_2", "exp_avg_sq", "step"]


def test_aggmo_adam_foreach_equals_loop_and_state_dict_roundtrips() -> None:
    seq = gradients(torch.float64, STEPS)
    kw = {"lr": 1e-2, "weight_decay": 0.1, "weights": (0.2, 0.3, 0.5)}
    runs = {}
    for name in ("loop", "foreach", "reloaded"):
        params = [p.requires_grad_() for p in initial_params(torch.float64)]
        opt = AggMoAdam(params, **kw, foreach=name == "foreach")
        for t in range(STEPS):
            if name == "reloaded" and t == 15:
                saved = copy.deepcopy(opt.state_dict())
                params = [p.detach().clone().requires_grad_() for p in params]
                opt = AggMoAdam(params, lr=1.0)
                opt.load_state_dict(saved)
            set_grads(params, seq[t])
            opt.step()
        runs[name] = (params, opt)
    p_loop, o_loop = runs["loop"]
    for name in ("foreach", "reloaded"):
        p_other, o_other = runs[name]
        for x, y in zip(p_loop, p_other):
            torch.testing.assert_close(x, y, rtol=1e-15, atol=1e-16, msg=name)
            sx, sy = o_loop.state[x], o_other.state[y]
            assert sx.keys() == sy.keys()
            for key in sx:
                torch.testing.assert_close(sx[key], sy[key], rtol=1e-15, atol=1e-16, msg=key)
    assert o_loop.state[p_loop[NONE_AT[1]]]["step"] == STEPS - 1


def test_registry_names_and_defaults() -> None:
    p = torch.zeros(2, requires_grad=True)
    opt = build_optimizer("AggMo_Adam", [p])
    group = opt.param_groups[0]
    assert isinstance(opt, AggMoAdam)
    assert group["lr"] == 1e-3 and group["betas"] == (0.0, 0.9, 0.99) and group["beta2"] == 0.999
    assert group["eps"] == 1e-8 and group["weight_decay"] == 0.0
    assert isinstance(build_optimizer("aggmo", [p], lr=0.01), AggMo)
    with pytest.raises(ValueError, match="lr"):
        build_optimizer("aggmo", [p])  # lr is required, as in the official code


@pytest.mark.parametrize(
    ("cls", "kwargs", "name"),
    [
        (AggMoAdam, {"betas": (0.0, 1.0, 0.99)}, "betas[1]"),
        (AggMoAdam, {"betas": ()}, "betas"),
        (AggMoAdam, {"beta2": 1.0}, "beta2"),
        (AggMoAdam, {"eps": -1e-8}, "eps"),
        (AggMoAdam, {"lr": -1.0}, "lr"),
        (AggMoAdam, {"weight_decay": -0.1}, "weight_decay"),
        (AggMoAdam, {"weights": (0.5, 0.5)}, "weights"),
        (AggMoAdam, {"weights": (1.0, float("nan"), 1.0)}, "weights[1]"),
        (AggMoAdam, {"weights": (0, 0.0, 0)}, "weights"),  # nothing would move
        (AggMoAdam, {"bias_correct": (True, False)}, "bias_correct"),
        (AggMoAdam, {"bias_correct": (True, 1, True)}, "bias_correct[1]"),
        (AggMo, {"lr": 0.1, "betas": (0.0, -0.9)}, "betas[1]"),
        (AggMo, {"lr": 0.1, "weight_decay": -1.0}, "weight_decay"),
        (AggMo, {"lr": -0.1}, "lr"),
    ],
)
def test_invalid_arguments_name_the_argument(cls: type, kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(name) + " "):
        cls([torch.zeros(2, requires_grad=True)], **kwargs)
