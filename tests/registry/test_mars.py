"""MARS against an independent float64 oracle (OPTIMIZERS.md section 7), torch AdamW and itself."""

from __future__ import annotations

import dataclasses
import io
import math

import pytest
import torch

from bench_cli.registry import build_optimizer, optimizer_defaults
from bench_cli.registry.mars import MARS
from tests.reference.mars_reference import MarsConfig, ParamState, reference_step

STEPS = 30
SHAPES = {"w2d": (4, 3), "k4d": (2, 3, 2, 2), "v1d": (5,), "s0d": ()}
GROUPS = (("w2d", "k4d"), ("v1d", "s0d"))  # group 1 decays nothing itself (weight_decay 0)
NONE_STEP, ZERO_STEP = 10, 15
CFG = MarsConfig(
    lr0=1e-2,
    betas=(0.95, 0.99),
    eps=1e-8,
    gamma=0.025,
    lr_1d=5e-3,
    betas_1d=(0.9, 0.95),
    weight_decay_1d=0.05,
)
GROUP_LR = (1.0, 0.5)  # base lr of each group, times the constructor lr
GROUP_WD = (0.1, 0.0)


def _mars_kwargs(cfg: MarsConfig) -> dict:
    return {
        "lr": cfg.lr0,
        "betas": cfg.betas,
        "eps": cfg.eps,
        "gamma": cfg.gamma,
        "mars_type": cfg.mars_type,
        "optimize_1d": cfg.optimize_1d,
        "lr_1d": cfg.lr_1d,
        "betas_1d": cfg.betas_1d,
        "weight_decay_1d": cfg.weight_decay_1d,
    }


def _cosine(t: int) -> float:
    return 0.5 * (1 + math.cos(math.pi * t / STEPS))


def _grads(scale: float, seed: int = 0) -> list[dict[str, torch.Tensor | None]]:
    """Pre-generated float64 gradients; one None step and one all-zero step."""
    gen = torch.Generator().manual_seed(seed)
    seq: list[dict[str, torch.Tensor | None]] = []
    for t in range(STEPS):
        step = {
            n: scale * torch.randn(s, generator=gen, dtype=torch.float64) for n, s in SHAPES.items()
        }
        if t == NONE_STEP:
            step["w2d"] = None  # skipped: no step count, no decay
        if t == ZERO_STEP:
            step["w2d"] = torch.zeros(SHAPES["w2d"], dtype=torch.float64)
            step["v1d"] = torch.zeros(SHAPES["v1d"], dtype=torch.float64)
        seq.append(step)
    return seq


def _make_params(dtype: torch.dtype, seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        n: torch.randn(s, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
        for n, s in SHAPES.items()
    }


@pytest.mark.parametrize("foreach", [False, True], ids=["loop", "foreach"])
@pytest.mark.parametrize("scale", [10.0, 1e-2], ids=["clipped", "unclipped"])
@pytest.mark.parametrize("optimize_1d", [False, True], ids=["opt1d_false", "opt1d_true"])
@pytest.mark.parametrize("mars_type", ["mars-adamw", "mars-lion"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_matches_reference_after_every_step(dtype, mars_type, optimize_1d, scale, foreach):
    cfg = dataclasses.replace(CFG, mars_type=mars_type, optimize_1d=optimize_1d)
    params = _make_params(dtype)
    groups = [
        {"params": [params[n] for n in names], "lr": cfg.lr0 * base, "weight_decay": wd}
        for names, base, wd in zip(GROUPS, GROUP_LR, GROUP_WD)
    ]
    opt = MARS(groups, **_mars_kwargs(cfg), foreach=foreach)
    ref_p = {n: p.detach().to(torch.float64) for n, p in params.items()}
    ref_st = {n: ParamState() for n in params}
    clipped = set()
    tol = {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
    for t, grads in enumerate(_grads(scale)):
        for group, base, wd, names in zip(opt.param_groups, GROUP_LR, GROUP_WD, GROUPS):
            group["lr"] = cfg.lr0 * base * _cosine(t)
            for n in names:
                g = grads[n]
                params[n].grad = None if g is None else g.to(dtype)  # a fresh tensor every step
                g_ref = None if g is None else g.to(dtype).to(torch.float64)  # the same values
                ref_p[n] = reference_step(ref_p[n], g_ref, ref_st[n], cfg, group["lr"], wd)
                clipped |= {n} if ref_st[n].clipped else set()
        opt.step()
        for n, p in params.items():
            torch.testing.assert_close(p.detach().to(torch.float64), ref_p[n], **tol, msg=n)
    mars_names = set(SHAPES) if optimize_1d else {"w2d"}
    assert clipped == (mars_names if scale > 1 else set())  # the configuration tests clipping
    assert opt.state[params["w2d"]]["step"] == STEPS - 1  # the None step was skipped


def _run_pair(build_ours, build_torch, shapes, grad_scale, lr0, lr_factor, foreach):
    """Step ours and torch's AdamW on copies of the same params and grads; compare every step."""
    gen = torch.Generator().manual_seed(3)
    init = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    ours = [x.clone().requires_grad_() for x in init]
    theirs = [x.clone().requires_grad_() for x in init]
    opt, ref = build_ours(ours), build_torch(theirs)
    for t in range(STEPS):
        opt.param_groups[0]["lr"] = lr0 * _cosine(t)
        ref.param_groups[0]["lr"] = lr0 * _cosine(t) * lr_factor
        for a, b in zip(ours, theirs):
            g = grad_scale * torch.randn(a.shape, generator=gen, dtype=torch.float64)
            a.grad, b.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("foreach", [False, True], ids=["loop", "foreach"])
def test_gamma_zero_with_small_grads_is_torch_adamw_on_2d(foreach):
    kw = {"lr": 1e-2, "betas": (0.9, 0.99), "eps": 1e-6, "weight_decay": 0.1}
    shapes = [(4, 3), (2, 5)]  # ||g|| < 1 with scale 0.05: never clipped

    def ours(ps):
        return MARS(ps, **kw, gamma=0.0, foreach=foreach)

    def theirs(ps):
        return torch.optim.AdamW(ps, **kw, foreach=False)

    _run_pair(ours, theirs, shapes, 0.05, kw["lr"], 1.0, foreach)


@pytest.mark.parametrize("foreach", [False, True], ids=["loop", "foreach"])
def test_adamw_branch_is_torch_adamw_with_scaled_lr_betas_1d_and_weight_decay_1d(foreach):
    lr, lr_1d = 1e-2, 4e-3
    shapes = [(5,), (), (2, 3, 2, 2), (2, 2, 3)]  # everything but 2-D, with optimize_1d=False

    def ours(ps):  # the group's weight_decay and betas must be ignored by this branch
        return MARS(
            ps,
            lr=lr,
            betas=(0.5, 0.6),
            weight_decay=0.0,
            eps=1e-7,
            lr_1d=lr_1d,
            betas_1d=(0.8, 0.9),
            weight_decay_1d=0.2,
            foreach=foreach,
        )

    def theirs(ps):
        return torch.optim.AdamW(ps, betas=(0.8, 0.9), eps=1e-7, weight_decay=0.2, foreach=False)

    _run_pair(ours, theirs, shapes, 3.0, lr, lr_1d / lr, foreach)


def test_first_step_corrects_by_one_plus_gamma_beta1_over_one_minus_beta1():
    beta1, gamma = 0.95, 0.025
    p = torch.zeros(3, 4, dtype=torch.float64, requires_grad=True)
    g = torch.linspace(-0.05, 0.05, 12, dtype=torch.float64).reshape(3, 4)  # ||1.475 g|| < 1
    p.grad = g.clone()
    opt = MARS([p], betas=(beta1, 0.99), gamma=gamma)
    opt.step()
    assert 1 + gamma * beta1 / (1 - beta1) == pytest.approx(1.475)
    torch.testing.assert_close(opt.state[p]["exp_avg"], (1 - beta1) * 1.475 * g)
    torch.testing.assert_close(opt.state[p]["last_grad"], g)


def test_zero_grad_after_a_step_still_moves_the_param():
    p = torch.ones(2, 2, dtype=torch.float64, requires_grad=True)
    opt = MARS([p], weight_decay=0.0)
    p.grad = torch.full((2, 2), 0.1, dtype=torch.float64)
    opt.step()
    before = p.detach().clone()
    p.grad = torch.zeros(2, 2, dtype=torch.float64)
    opt.step()
    assert opt.state[p]["step"] == 2
    assert not torch.equal(p.detach(), before)


@pytest.mark.parametrize("foreach", [False, True], ids=["loop", "foreach"])
def test_grads_zeroed_in_place_do_not_change_our_steps(foreach):
    """The official code keeps a reference to p.grad as g_prev; we keep a copy."""
    gen = torch.Generator().manual_seed(5)
    init = torch.randn(4, 3, dtype=torch.float64)
    fresh, inplace = init.clone().requires_grad_(), init.clone().requires_grad_()
    opt_fresh, opt_inplace = MARS([fresh], foreach=foreach), MARS([inplace], foreach=foreach)
    inplace.grad = torch.zeros_like(inplace)
    for _ in range(10):
        g = torch.randn(4, 3, generator=gen, dtype=torch.float64)
        fresh.grad = g.clone()
        inplace.grad.add_(g)  # what backward does after zero_grad(set_to_none=False)
        opt_fresh.step()
        opt_inplace.step()
        opt_fresh.zero_grad(set_to_none=True)
        opt_inplace.zero_grad(set_to_none=False)
        torch.testing.assert_close(inplace, fresh, rtol=0.0, atol=0.0)


# Two "batches": quadratics f_k(W, b) = 1/2 sum A_k W^2 + sum C_k W + 1/2 sum a_k b^2 + sum c_k b.
_gen = torch.Generator().manual_seed(7)
BATCHES = [
    tuple(torch.rand(s, generator=_gen, dtype=torch.float64) + off for s in ((3, 2), (3,)))
    + tuple(torch.randn(s, generator=_gen, dtype=torch.float64) for s in ((3, 2), (3,)))
    for off in (0.5, 2.0)
]


W0 = torch.tensor([[0.5, -1.0], [2.0, 0.1], [-0.3, 0.8]], dtype=torch.float64)


def _batch(t: int):
    return BATCHES[t % 2]


def _loss(W, b, batch):
    A, a, C, c = batch
    return 0.5 * (A * W * W).sum() + (C * W).sum() + 0.5 * (a * b * b).sum() + (c * b).sum()


def _grad(W, b, batch):
    A, a, C, c = batch
    return A * W + C, a * b + c


def _run_exact_reference(cfg: MarsConfig, lr: float, wd: float, exact: bool):
    W, b = W0.clone(), torch.ones(3, dtype=torch.float64)
    st_W, st_b = ParamState(), ParamState()
    out = []
    for t in range(STEPS):
        gW, gb = _grad(W, b, _batch(t))
        look = _grad(W, b, _batch(t + 1))[0] if exact else None
        W = reference_step(W, gW, st_W, cfg, lr, wd, g_lookahead=look)
        b = reference_step(b, gb, st_b, cfg, lr, wd)
        out.append((W, b))
    return out


@pytest.mark.parametrize("foreach", [False, True], ids=["loop", "foreach"])
@pytest.mark.parametrize("mars_type", ["mars-adamw", "mars-lion"])
def test_exact_variant_follows_the_lookahead_protocol(mars_type, foreach):
    cfg = MarsConfig(lr0=1e-2, gamma=0.5, mars_type=mars_type)  # large gamma: g_prev matters
    lr, wd = cfg.lr0, 0.1
    W = W0.clone().requires_grad_()
    b = torch.ones(3, dtype=torch.float64, requires_grad=True)
    opt = MARS([W, b], **_mars_kwargs(cfg), weight_decay=wd, is_approx=False, foreach=foreach)
    assert opt.needs_lookahead_grad and not MARS([torch.zeros(1)]).needs_lookahead_grad
    want = _run_exact_reference(cfg, lr, wd, exact=True)
    approx = _run_exact_reference(cfg, lr, wd, exact=False)
    assert (want[-1][0] - approx[-1][0]).abs().max() > 1e-4  # the variants really differ here
    for t in range(STEPS):
        _loss(W, b, _batch(t + 1)).backward()  # the next batch at the current point
        opt.store_lookahead_grad()
        opt.zero_grad()
        _loss(W, b, _batch(t)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.testing.assert_close(W.detach(), want[t][0], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(b.detach(), want[t][1], rtol=1e-10, atol=1e-12)
    assert "previous_grad" not in opt.state[b]  # the AdamW branch has no g_prev


def test_exact_variant_refuses_a_step_without_the_lookahead_grad():
    p = torch.zeros(2, 2, requires_grad=True)
    opt = MARS([p], is_approx=False)
    p.grad = torch.ones(2, 2)
    with pytest.raises(RuntimeError, match="store_lookahead_grad"):
        opt.step()
    opt.store_lookahead_grad()
    opt.step()
    with pytest.raises(RuntimeError, match="store_lookahead_grad"):
        opt.step()  # once per step
    with pytest.raises(RuntimeError, match="is_approx=False"):
        MARS([p]).store_lookahead_grad()


def _all_state(opt) -> list[torch.Tensor]:
    return [
        v if isinstance(v, torch.Tensor) else torch.tensor(float(v))
        for p in (q for g in opt.param_groups for q in g["params"])
        for _, v in sorted(opt.state[p].items())
    ]


@pytest.mark.parametrize("mars_type", ["mars-adamw", "mars-lion"])
@pytest.mark.parametrize("optimize_1d", [False, True])
def test_foreach_equals_loop_params_and_every_state_tensor(optimize_1d, mars_type):
    cfg = dataclasses.replace(CFG, optimize_1d=optimize_1d, mars_type=mars_type)
    runs = []
    for foreach in (False, True):
        params = _make_params(torch.float64)
        opt = MARS(list(params.values()), **_mars_kwargs(cfg), weight_decay=0.1, foreach=foreach)
        for grads in _grads(3.0):
            for n, p in params.items():
                p.grad = grads[n]
            opt.step()
        runs.append((list(params.values()), _all_state(opt)))
    (p_loop, s_loop), (p_fe, s_fe) = runs
    assert len(s_loop) == len(s_fe)
    for a, b in zip(p_loop + s_loop, p_fe + s_fe):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("is_approx", [True, False], ids=["approx", "exact"])
def test_state_dict_roundtrip_gives_same_next_step(is_approx):
    kw = {"is_approx": is_approx, "weight_decay": 0.1, "optimize_1d": False}
    params = _make_params(torch.float64)
    opt = MARS(list(params.values()), **kw)
    grads = _grads(3.0)

    def step(opt, ps, t):
        if not is_approx:
            for n, p in ps.items():
                p.grad = None if grads[t + 1][n] is None else grads[t + 1][n].clone()
            opt.store_lookahead_grad()
        for n, p in ps.items():
            p.grad = grads[t][n]
        opt.step()

    for t in range(12):
        step(opt, params, t)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    copies = {n: p.detach().clone().requires_grad_() for n, p in params.items()}
    loaded = MARS(list(copies.values()), **kw)
    buf.seek(0)
    loaded.load_state_dict(torch.load(buf))
    for t in range(12, 20):
        step(opt, params, t)
        step(loaded, copies, t)
        for n in params:
            torch.testing.assert_close(copies[n], params[n], rtol=0.0, atol=0.0)


def test_constructor_defaults_are_the_official_ones():
    assert optimizer_defaults(MARS) == {
        "lr": 3e-3,
        "betas": (0.95, 0.99),
        "eps": 1e-8,
        "weight_decay": 0.0,
        "gamma": 0.025,
        "is_approx": True,
        "mars_type": "mars-adamw",
        "optimize_1d": False,
        "lr_1d": 3e-3,
        "betas_1d": (0.9, 0.95),
        "weight_decay_1d": 0.1,
    }
    assert isinstance(build_optimizer("MARS", [torch.zeros(2, requires_grad=True)]), MARS)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"gamma": -0.1}, "gamma"),
        ({"mars_type": "mars-shampoo"}, "mars_type"),
        ({"betas_1d": (0.9, 1.0)}, r"betas_1d\[1\]"),
        ({"lr_1d": -1e-3}, "lr_1d"),
        ({"betas": (0.95, 1.5)}, r"betas\[1\]"),
        ({"lr": 0.0}, "lr"),
        ({"weight_decay_1d": -0.1}, "weight_decay_1d"),
    ],
)
def test_invalid_arguments_raise_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        MARS([torch.zeros(2, 2, requires_grad=True)], **kwargs)


def test_mars_type_error_lists_the_supported_types():
    with pytest.raises(ValueError, match="'mars-adamw', 'mars-lion'"):
        MARS([torch.zeros(2, 2, requires_grad=True)], mars_type="mars-shampoo")


def test_optimizer_wide_argument_in_a_param_group_is_rejected():
    with pytest.raises(ValueError, match="gamma"):
        MARS([{"params": [torch.zeros(2, 2, requires_grad=True)], "gamma": 0.1}])
