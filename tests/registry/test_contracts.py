"""Contracts every registered optimizer keeps (a plug-in optimizer is checked the same way)."""

from __future__ import annotations

import copy
import inspect
import math

import pytest
import torch

from bench_cli.errors import ConfigError
from bench_cli.registry import OPTIMIZERS, build_optimizer, optimizer_defaults
from bench_cli.registry.adamw import AdamW

NAMES = OPTIMIZERS.names()

# Hyperparameters under which each built-in reaches the optimum of the quadratic below.
CONVERGE = {
    "adamw": dict(lr=0.05, weight_decay=0.0),
    "ademamix": dict(lr=0.05, betas=(0.9, 0.999, 0.99), alpha=2.0),
    "simplified-ademamix": dict(lr=0.005, betas=(0.9, 0.999), alpha=1.0),
    "aggmo-adam": dict(lr=0.05),
    "aggmo": dict(lr=0.02),
    "lion": dict(lr=0.05),
    "schedule-free": dict(lr=0.2, betas=(0.9, 0.99), warmup_steps=20),
    "mars": dict(lr=0.05, lr_1d=0.05, weight_decay_1d=0.0),
}


def _build(name: str, params, **kw):
    base = {"lr": 1e-2} if optimizer_defaults(OPTIMIZERS.get(name)).get("lr") is None else {}
    return build_optimizer(name, params, **{**base, **kw})


def _ready(opt) -> None:
    if getattr(opt, "has_train_eval_modes", False):
        opt.train()


def _params(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(4, 3), (3,), (2, 2, 2, 2), ()]
    return [torch.randn(s, generator=g, dtype=dtype).requires_grad_() for s in shapes]


def _grads(params, seed):
    g = torch.Generator().manual_seed(1000 + seed)
    return [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]


def _step(opt, params, grads) -> None:
    for p, grad in zip(params, grads):
        p.grad = None if grad is None else grad.clone()
    opt.step()


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_roundtrip_gives_same_next_step(name: str) -> None:
    params = _params()
    opt = _build(name, params)
    _ready(opt)
    for t in range(5):
        _step(opt, params, _grads(params, t))
    saved_opt = copy.deepcopy(opt.state_dict())
    saved_params = [p.detach().clone() for p in params]

    clone_params = [p.detach().clone().requires_grad_() for p in params]
    clone = _build(name, clone_params)
    clone.load_state_dict(saved_opt)
    for t in range(5, 8):
        grads = _grads(params, t)
        _step(opt, params, grads)
        _step(clone, clone_params, grads)
    for p, q, p0 in zip(params, clone_params, saved_params):
        assert not torch.equal(p.detach(), p0)  # the steps moved something
        torch.testing.assert_close(p, q, rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_invalid_arguments_raise_value_error_naming_the_argument(name: str) -> None:
    params = _params()
    with pytest.raises(ValueError, match="lr"):
        _build(name, params, lr=-1.0)
    with pytest.raises(ConfigError, match="no hyperparameter 'not_an_arg'"):
        _build(name, params, not_an_arg=1)
    defaults = optimizer_defaults(OPTIMIZERS.get(name))
    if isinstance(defaults.get("betas"), tuple):
        bad = list(defaults["betas"])
        bad[-1] = 1.0
        with pytest.raises(ValueError, match=r"betas\[\d\]"):
            _build(name, params, betas=tuple(bad))


@pytest.mark.parametrize("name", NAMES)
def test_drives_a_convex_quadratic_to_its_optimum(name: str) -> None:
    h = torch.tensor([1.0, 3.0, 10.0, 0.5], dtype=torch.float64)
    x_star = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    x = torch.zeros(2, 4, dtype=torch.float64, requires_grad=True)  # 2-D: every branch applies
    hp = CONVERGE.get(name, {})
    opt = _build(name, [x], **hp)
    _ready(opt)
    lr0, steps = opt.param_groups[0]["lr"], 600
    for t in range(steps):
        opt.param_groups[0]["lr"] = lr0 * 0.5 * (1 + math.cos(math.pi * t / steps))
        x.grad = (h * (x.detach() - x_star)).clone()
        opt.step()
    if getattr(opt, "has_train_eval_modes", False):
        opt.eval()
    err = (x.detach() - x_star).abs().max().item()
    assert err < 2e-2, f"{name} ended {err:.3g} away from the optimum"


def _has_foreach(name: str) -> bool:
    return "foreach" in inspect.signature(OPTIMIZERS.get(name).__init__).parameters


@pytest.mark.parametrize("block", [None, 5], ids=["default-blocks", "tensors-cut-in-blocks"])
@pytest.mark.parametrize("name", [n for n in NAMES if _has_foreach(n)])
def test_foreach_equals_the_loop_for_params_and_state(name: str, block, monkeypatch) -> None:
    """float64, with an empty group, a parameter that never gets a gradient, a zero-size one;
    also with CPU foreach buckets so small that every tensor is cut into flat views."""
    if block is not None:
        monkeypatch.setattr("bench_cli.registry._base.CPU_BLOCK_NUMEL", block)
    results = []
    for foreach in (False, True):
        params = _params()
        never = torch.ones(3, dtype=torch.float64, requires_grad=True)
        empty = torch.zeros(0, 4, dtype=torch.float64, requires_grad=True)
        groups = [
            {"params": params[:2] + [never]},
            {"params": params[2:] + [empty], "lr": 5e-3},
            {"params": []},
        ]
        opt = _build(name, groups, foreach=foreach)
        _ready(opt)
        for t in range(12):
            grads = _grads(params, t)
            if t == 4:
                grads[1] = None  # a step with no gradient for one parameter
            if t == 6:
                grads[0] = torch.zeros_like(grads[0])
            _step(opt, params + [empty], grads + [torch.zeros(0, 4, dtype=torch.float64)])
            opt.param_groups[0]["lr"] *= 0.9
        assert never not in opt.state or not opt.state[never]
        state = [opt.state[p] for p in params + [empty]]
        results.append(([p.detach().clone() for p in params], state))
    (p_loop, s_loop), (p_fe, s_fe) = results
    for a, b in zip(p_loop, p_fe):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-15)
    for sa, sb in zip(s_loop, s_fe):
        assert sa.keys() == sb.keys()
        for key in sa:
            va, vb = sa[key], sb[key]
            if isinstance(va, torch.Tensor):
                torch.testing.assert_close(va, vb, rtol=1e-14, atol=1e-15)
            elif isinstance(va, list):
                for x, y in zip(va, vb):
                    torch.testing.assert_close(x, y, rtol=1e-14, atol=1e-15)
            else:
                assert va == vb, key


def _outcome(call, *args, **kwargs) -> str:
    try:
        call(*args, **kwargs)
    except ConfigError as exc:
        return str(exc)
    return "ok"


def _variants(name: str):
    """The defaults, and each value made wrong in the ways a suite file gets it wrong."""
    defaults = optimizer_defaults(OPTIMIZERS.get(name))
    base = {**defaults, "lr": defaults.get("lr") or 1e-2}
    yield base
    for key, value in defaults.items():
        if isinstance(value, bool):
            bad = ["yes", 1]
        elif isinstance(value, (int, float)):
            bad = [-1.0, 2.0, "x", None, 10**9]
        elif isinstance(value, (tuple, list)):
            bad = [[], [0.5] * (len(value) + 1), [1.5] * len(value), [-0.1] * len(value), "x"]
        else:
            bad = [-1, "no-such-choice", 3.5]
        for b in bad:
            yield {**base, key: b}


def test_planning_and_running_the_builtins_load_no_torch_dynamo() -> None:
    """torch marks ``Optimizer.add_param_group``, ``zero_grad``, ``state_dict`` and
    ``load_state_dict`` so that their first call imports ``torch._dynamo`` (seconds, paid by
    every command and worker); the project's optimizers call the plain methods while nothing has
    loaded it. torch's own AdamW shows that the check below would see the import."""
    import subprocess
    import sys

    code = (
        "import sys, torch; from bench_cli.registry import OPTIMIZERS, build_optimizer\n"
        "from bench_cli.registry import check_optimizer\n"
        "for n in OPTIMIZERS.names():\n"
        "    check_optimizer(n, lr=0.01)\n"
        "    w = torch.nn.Parameter(torch.ones(3, 2))\n"
        "    opt = build_optimizer(n, [w], lr=0.01)\n"
        "    getattr(opt, 'train', lambda: None)()  # Schedule-Free's mode\n"
        "    opt.add_param_group({'params': [torch.nn.Parameter(torch.ones(2))]})\n"
        "    for _ in range(2):\n"
        "        (w ** 2).sum().backward(); opt.step(); opt.zero_grad()\n"
        "    assert w.grad is None and not torch.equal(w, torch.ones(3, 2)), n\n"
        "    saved = opt.state_dict()  # a checkpoint, and its resumption\n"
        "    again = build_optimizer(n, [w], lr=0.01)\n"
        "    again.add_param_group({'params': [torch.nn.Parameter(torch.ones(2))]})\n"
        "    again.load_state_dict(saved)\n"
        "    assert repr(again.state_dict()) == repr(saved), n\n"
        "assert 'torch._dynamo' not in sys.modules\n"
        "torch.optim.AdamW([torch.zeros(2, requires_grad=True)])\n"
        "assert 'torch._dynamo' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_compiled_step_with_zero_grad_matches_eager() -> None:
    """Once ``torch._dynamo`` is loaded, ``zero_grad`` is torch's own, kept out of compiled code:
    a compiled step that calls it gives the eager step's parameters."""

    def train(step):
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.randn(4, 3))
        opt = build_optimizer("adamw", [w], lr=0.1)

        def one():
            (w.sin() ** 2).sum().backward()
            opt.step()
            opt.zero_grad()

        fn = step(one)
        for _ in range(3):
            fn()
        return w.detach().clone()

    eager = train(lambda f: f)
    compiled = train(lambda f: torch.compile(f, backend="eager"))
    torch.testing.assert_close(compiled, eager)


def test_the_plain_methods_keep_torchs_signatures() -> None:
    """Callers inspect them (``"set_to_none" in signature(opt.zero_grad).parameters``)."""
    import inspect

    opt = build_optimizer("adamw", [torch.zeros(2, requires_grad=True)])
    for name in ("zero_grad", "add_param_group", "state_dict", "load_state_dict"):
        ours = inspect.signature(getattr(opt, name))
        torchs = inspect.signature(getattr(torch.optim.AdamW([torch.zeros(1)]), name))
        assert ours == torchs, name
    assert "set_to_none" in inspect.signature(opt.zero_grad).parameters


class _CappedAdamW(AdamW):
    """A plug-in that checks a value of its own after its parent's constructor."""

    def __init__(self, params, lr: float = 1e-3, cap: float = 1.0):
        super().__init__(params, lr=lr)
        if cap <= 0:
            raise ValueError(f"cap must be > 0, got {cap}")


class _ListingAdamW(AdamW):
    """A plug-in that reads its parameters before its parent's constructor."""

    def __init__(self, params, lr: float = 1e-3):
        params = list(params)
        super().__init__(params, lr=lr)


def _factory_sgd(params, lr: float = 0.1):
    """A plug-in registered as a function that returns an optimizer."""
    return torch.optim.SGD(params, lr=lr)


@pytest.mark.parametrize(
    ("plugin", "values"),
    [
        (_CappedAdamW, [{"cap": -1.0}, {"cap": 2.0}]),
        (_ListingAdamW, [{"lr": 0.1}, {"lr": -1.0}]),
        (_factory_sgd, [{"lr": 0.1}]),
    ],
)
def test_checking_a_plugins_values_agrees_with_building_it(monkeypatch, plugin, values) -> None:
    """A plug-in, subclass of a built-in or not, is checked by building it: planning refuses
    exactly what a run would refuse."""
    from bench_cli.registry import check_optimizer

    monkeypatch.setitem(OPTIMIZERS._items, "test-plugin", plugin)  # as registering does
    monkeypatch.setattr(plugin, "registry_name", "test-plugin", raising=False)
    for hp in values:
        built = _outcome(build_optimizer, "test-plugin", [torch.zeros(2, requires_grad=True)], **hp)
        assert _outcome(check_optimizer, "test-plugin", **hp) == built, hp
