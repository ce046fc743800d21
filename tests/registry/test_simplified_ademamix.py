"""Simplified-AdEMAMix against an independent float64 oracle and the AdEMAMix identity."""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch

from bench_cli.registry import build_optimizer
from bench_cli.registry.simplified_ademamix import SimplifiedAdEMAMix
from tests.reference.simplified_ademamix_reference import (
    SimAdEMAMixConfig,
    new_state,
    simplified_ademamix_step,
)
from tests.registry import golden
from tests.registry.harness import NONE_AT, SHAPES, gradients, set_grads

GROUPS = [[0, 1], [2, 3]]  # parameter indices of the two param groups
STEPS = 30
LR0 = 1e-3
GROUP1 = {"lr_factor": 0.5, "weight_decay": 0.05}  # the second group's overrides

TOL = {torch.float64: {"rtol": 1e-10, "atol": 1e-12}, torch.float32: {"rtol": 1e-5, "atol": 1e-6}}


def lr_at(t: int) -> float:
    """A cosine lr that changes every step and never reaches 0."""
    return LR0 * (0.55 + 0.45 * math.cos(math.pi * t / STEPS))


def initial_params(dtype: torch.dtype) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in SHAPES]


COMBOS = {
    "defaults": {},
    "bc1": {"bias_correction1": True},
    "warmup": {"beta1_warmup": 10, "min_beta1": 0.9},
    "alpha2": {"alpha": 2.0},
    "wd": {"weight_decay": 0.1},
    "no_bc2_large_eps": {"bias_correction2": False, "eps": 1e-3},
    "all": {"alpha": 2.0, "beta1_warmup": 10, "bias_correction1": True, "weight_decay": 0.1},
}


def _config(hparams: dict, lr: float, group: int) -> SimAdEMAMixConfig:
    kw = dict(hparams)
    if "betas" in kw:
        kw["beta1"], kw["beta2"] = kw.pop("betas")
    if group == 1:
        kw["weight_decay"] = GROUP1["weight_decay"]
        lr *= GROUP1["lr_factor"]
    return SimAdEMAMixConfig(lr=lr, **kw)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("foreach", [False, True], ids=["loop", "foreach"])
@pytest.mark.parametrize("combo", sorted(COMBOS))
def test_matches_oracle_after_every_step(combo: str, foreach: bool, dtype: torch.dtype) -> None:
    hparams = COMBOS[combo]
    params = [p.requires_grad_() for p in initial_params(dtype)]
    groups = [
        {"params": [params[i] for i in GROUPS[0]]},
        {"params": [params[i] for i in GROUPS[1]], "weight_decay": GROUP1["weight_decay"]},
    ]
    opt = SimplifiedAdEMAMix(groups, lr=LR0, **hparams, foreach=foreach)
    ref = [p.detach().double().clone() for p in params]
    ref_states = [new_state(p) for p in ref]
    for t, grads in enumerate(gradients(dtype, STEPS)):
        opt.param_groups[0]["lr"] = lr_at(t)
        opt.param_groups[1]["lr"] = lr_at(t) * GROUP1["lr_factor"]
        set_grads(params, grads)
        opt.step()
        for gi, idx in enumerate(GROUPS):
            cfg = _config(hparams, lr_at(t), gi)
            for i in idx:
                if grads[i] is not None:
                    ref[i] = simplified_ademamix_step(ref[i], grads[i], ref_states[i], cfg)
        for i, p in enumerate(params):
            torch.testing.assert_close(
                p.detach(), ref[i].to(dtype), **TOL[dtype], msg=f"step {t}, param {i}"
            )
    # the skipped parameter is one step behind in its own counter
    assert opt.state[params[NONE_AT[1]]]["step"] == STEPS - 1
    assert opt.state[params[0]]["step"] == STEPS


@pytest.mark.parametrize("foreach", [False, True], ids=["loop", "foreach"])
@pytest.mark.parametrize("a", [0.5, 2.0])
def test_identity_with_ademamix_beta1_zero(a: float, foreach: bool) -> None:
    """Sim(lr, (b, b2), a, wd) is AdEMAMix(a lr, (0, b2, b), 1/(a(1-b)), wd/a)."""
    b, beta2, wd = 0.95, 0.99, 0.1
    p_sim = [p.requires_grad_() for p in initial_params(torch.float64)]
    p_ade = [p.detach().clone().requires_grad_() for p in p_sim]
    sim = build_optimizer(
        "simplified-ademamix",
        p_sim,
        lr=LR0,
        betas=(b, beta2),
        alpha=a,
        weight_decay=wd,
        foreach=foreach,
    )
    ade = build_optimizer(
        "ademamix",
        p_ade,
        lr=LR0 * a,
        betas=(0.0, beta2, b),
        alpha=1.0 / (a * (1.0 - b)),
        weight_decay=wd / a,
    )
    for t, grads in enumerate(gradients(torch.float64, STEPS)):
        sim.param_groups[0]["lr"] = lr_at(t)
        ade.param_groups[0]["lr"] = lr_at(t) * a
        set_grads(p_sim, grads)
        set_grads(p_ade, grads)
        sim.step()
        ade.step()
        for x, y in zip(p_sim, p_ade):
            torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12, msg=f"step {t}")


@pytest.mark.parametrize("foreach", [False, True], ids=["loop", "foreach"])
@pytest.mark.parametrize("alpha", [0.0, 2.0])
def test_first_step_is_one_plus_alpha_times_sign(alpha: float, foreach: bool) -> None:
    p = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    opt = SimplifiedAdEMAMix([p], lr=0.1, alpha=alpha, foreach=foreach)
    p.grad = torch.tensor([3.0, -0.2, 1e-2], dtype=torch.float64)
    opt.step()
    want = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64) - 0.1 * (1 + alpha) * p.grad.sign()
    torch.testing.assert_close(p.detach(), want, rtol=1e-5, atol=0.0)


def _run(opt: torch.optim.Optimizer, params: list[torch.Tensor], steps: range) -> None:
    seq = gradients(torch.float64, STEPS)
    for t in steps:
        set_grads(params, seq[t])
        opt.step()


def test_foreach_equals_loop_for_every_state_entry() -> None:
    hparams = COMBOS["all"]
    runs = []
    for foreach in (False, True):
        params = [p.requires_grad_() for p in initial_params(torch.float64)]
        opt = SimplifiedAdEMAMix(params, lr=LR0, **hparams, foreach=foreach)
        _run(opt, params, range(STEPS))
        runs.append((params, opt))
    (p_loop, o_loop), (p_fe, o_fe) = runs
    for a, b in zip(p_loop, p_fe):
        torch.testing.assert_close(a, b, rtol=1e-15, atol=1e-16)
        sa, sb = o_loop.state[a], o_fe.state[b]
        assert sa.keys() == sb.keys() == {"step", "exp_avg", "exp_avg_sq", "num_sum", "den_sum"}
        for key in sa:
            torch.testing.assert_close(sa[key], sb[key], rtol=1e-15, atol=1e-16)


def test_state_dict_roundtrip_gives_same_next_steps() -> None:
    hparams = {**COMBOS["all"], "bias_correction2": False, "eps": 1e-3}
    params = [p.requires_grad_() for p in initial_params(torch.float64)]
    opt = SimplifiedAdEMAMix(params, lr=LR0, **hparams)
    _run(opt, params, range(15))
    saved = copy.deepcopy(opt.state_dict())  # as if saved to disk: no shared buffers
    clones = [p.detach().clone().requires_grad_() for p in params]
    fresh = SimplifiedAdEMAMix(clones, lr=1.0)  # every hyperparameter comes from the state dict
    fresh.load_state_dict(saved)
    assert fresh.param_groups[0]["bias_correction1"] is True
    assert isinstance(fresh.state[clones[0]]["num_sum"], float)
    _run(opt, params, range(15, STEPS))
    _run(fresh, clones, range(15, STEPS))
    for a, b in zip(params, clones):
        torch.testing.assert_close(a, b, rtol=0.0, atol=0.0)


def test_registry_defaults_and_declarations() -> None:
    p = torch.zeros(2, requires_grad=True)
    opt = build_optimizer("Simplified_AdEMAMix", [p])
    group = opt.param_groups[0]
    assert isinstance(opt, SimplifiedAdEMAMix)
    assert group["lr"] == 1e-4 and group["betas"] == (0.99, 0.95) and group["alpha"] == 0.0
    assert group["beta1_warmup"] is None and group["min_beta1"] == 0.9 and group["eps"] == 1e-8
    assert group["bias_correction1"] is False and group["bias_correction2"] is True
    assert SimplifiedAdEMAMix.horizon_hparams == ("beta1_warmup",)


@pytest.mark.parametrize("case", ["simademamix_default", "simademamix_bc1"])
def test_oracle_itself_reproduces_golden_row(case: str) -> None:
    """The oracle is independent of bench_cli; check it against the official code's numbers."""
    _, hparams, _, _, expected = golden.CASES[case]
    cfg = _config({k: v for k, v in hparams.items() if k != "lr"}, hparams["lr"], 0)
    W = torch.tensor(golden.W0, dtype=torch.float64)
    b = torch.tensor(golden.B0, dtype=torch.float64)
    sw, sb = new_state(W), new_state(b)
    for _ in range(golden.STEPS):
        W, b = (
            simplified_ademamix_step(W, golden.A * W + golden.C, sw, cfg),
            simplified_ademamix_step(b, golden.a * b + golden.c, sb, cfg),
        )
    got = torch.cat([W.flatten(), b])
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=1e-10, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"betas": (0.99, 1.0)}, "betas[1]"),
        ({"betas": (-0.1, 0.95)}, "betas[0]"),
        ({"betas": (0.9,)}, "betas"),
        ({"lr": -1.0}, "lr"),
        ({"eps": -1e-8}, "eps"),
        ({"alpha": -1.0}, "alpha"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"beta1_warmup": 0}, "beta1_warmup"),
        ({"min_beta1": 1.0}, "min_beta1"),
        ({"min_beta1": -0.5}, "min_beta1"),
        ({"bias_correction1": "yes"}, "bias_correction1"),
    ],
)
def test_invalid_arguments_name_the_argument(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(name) + " "):
        SimplifiedAdEMAMix([torch.zeros(2, requires_grad=True)], **kwargs)
