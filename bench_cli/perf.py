"""``bench perf optimizers``: time every optimizer's step on each of its paths.

For a parameter set (GPT-2 small's shapes, or N parameters in a few tensors) each row gives the
path, ms per step (steps issued back to back, as in training, then one synchronisation), the
bytes the update must move over that time (GB/s), that time over the bandwidth bound (the bytes
over the device-to-device copy bandwidth measured in the same run), the time over torch's fused
AdamW (on CPU: torch's foreach AdamW), and the one-time cost: how much longer the first step took
than a steady one (Triton compilation, autotuning, state allocation).

Bytes per parameter: the parameter read and written, the gradient read, every state buffer read
and written: 4 x (3 + 2 S) for S fp32 state buffers (AdamW 28, AdEMAMix 36, Lion 20). MARS clips
each tensor's corrected gradient c = g + scale (g - g_prev) by the norm of the whole tensor before
it may update any element, so it must read g and g_prev a second time (the norm pass): 8 bytes
more on its MARS-branch tensors (44 in all).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from bench_cli.errors import ConfigError, clip
from bench_cli.registry import OPTIMIZERS, build_optimizer
from bench_cli.registry._base import state_bytes

TORCH_ADAMW = "torch.optim.AdamW"
#: the largest ``--params``: 100 billion, beyond what one device holds with gradients and state
MAX_PARAMS = 10**11
#: fp32 values a timed step holds per parameter: the parameter, its gradient and up to three
#: state buffers (AdEMAMix, MARS, AggMo)
VALUES_PER_PARAM = 5


@dataclass
class Row:
    optimizer: str
    path: str
    ms_per_step: float
    gb_per_s: float
    bytes_per_param: float
    x_bound: float | None
    x_torch_fused_adamw: float | None
    one_time_s: float


def gpt2_shapes(n_layer: int = 12, n_embd: int = 768, vocab: int = 50304, ctx: int = 1024):
    """Parameter shapes of GPT-2 small (lm_head tied to the token embedding): 124.5M."""
    shapes: list[tuple[int, ...]] = [(vocab, n_embd), (ctx, n_embd)]
    block = [
        (n_embd,), (n_embd,), (3 * n_embd, n_embd), (3 * n_embd,), (n_embd, n_embd), (n_embd,),
        (n_embd,), (n_embd,), (4 * n_embd, n_embd), (4 * n_embd,), (n_embd, 4 * n_embd),
        (n_embd,),
    ]  # fmt: skip
    for _ in range(n_layer):
        shapes += block
    return shapes + [(n_embd,), (n_embd,)]


def shapes_for(params: str) -> list[tuple[int, ...]]:
    """``gpt2-small`` or a number N: N parameters as matrices of width 1000 plus vectors."""
    if params == "gpt2-small":
        return gpt2_shapes()
    try:
        n = int(float(params))
    except ValueError:
        raise ConfigError(
            f"--params must be gpt2-small or a number, got {clip(repr(params))}"
        ) from None
    except OverflowError:  # inf, 1e400
        n = MAX_PARAMS + 1 if float(params) > 0 else 0
    if n < 1000:
        raise ConfigError(f"--params must be at least 1000, got {clip(params)}")
    if n > MAX_PARAMS:
        raise ConfigError(f"--params must be at most {MAX_PARAMS:,}, got {clip(params)}")
    rows = n // 1000
    mats = [(rows // 4, 1000)] * 4 if rows >= 4 else [(rows, 1000)]
    rest = n - sum(a * b for a, b in mats)
    return mats + ([(rest,)] if rest else [])


def check_memory(numel: int, device: torch.device, params: str) -> None:
    """Refuse a parameter count whose tensors cannot fit, before allocating any: on CPU the
    memory the host has available (as ``bench run`` counts it), on a GPU its free memory. The
    count is not a guess, so unlike ``bench run`` it allows no slack."""
    need = VALUES_PER_PARAM * 4 * numel / 2**30
    if device.type == "cuda":
        from bench_cli.environment import gpu_free_bytes

        index = device.index if device.index is not None else torch.cuda.current_device()
        have, where = gpu_free_bytes([index])[0] / 2**30, f"GPU {index} has"
    elif device.type == "cpu":
        from bench_cli.api import host_memory_gib

        have, where = host_memory_gib(), "this machine has"
    else:
        return
    if have is not None and need > have:
        raise ConfigError(
            f"--params {clip(params)} needs about {need:,.1f} GiB (parameters, gradients and "
            f"optimizer state in fp32) but {where} {have:,.1f} GiB available; lower --params"
        )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def copy_bandwidth(device: torch.device, numel: int) -> float:
    """Bytes per second of a device-to-device copy, read and write counted."""
    src = torch.empty(numel, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    sync(device)
    n = 20
    t0 = time.perf_counter()
    for _ in range(n):
        dst.copy_(src)
    sync(device)
    return 2 * src.numel() * 4 * n / (time.perf_counter() - t0)


def paths(name: str, device: torch.device) -> list[tuple[str, dict[str, Any]]]:
    if name == TORCH_ADAMW:
        if device.type == "cuda":
            return [("fused", dict(fused=True)), ("foreach", dict(foreach=True))]
        return [("foreach", dict(foreach=True))]
    if device.type == "cuda":
        return [("fast", dict(fused=True)), ("foreach", dict(foreach=True, fused=False))]
    return [("foreach", dict(foreach=True)), ("loop", dict(foreach=False))]


def random_optimizer(
    name: str, impl: dict[str, Any], shapes, device: torch.device
) -> torch.optim.Optimizer:
    """``name`` (or torch's AdamW) with path options ``impl`` over random parameters of
    ``shapes`` on ``device``, each holding a random gradient, ready to step."""
    gen = torch.Generator(device=device).manual_seed(0)
    params = [
        (torch.randn(s, generator=gen, device=device) * 0.02).requires_grad_() for s in shapes
    ]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen, device=device) * 1e-3
    if name == TORCH_ADAMW:
        opt = torch.optim.AdamW(params, lr=1e-3, **impl)
    else:
        extra = {"lr": 1e-3} if name == "aggmo" else {}
        opt = build_optimizer(name, params, **extra, **impl)
    if getattr(opt, "has_train_eval_modes", False):
        opt.train()
    return opt


def time_path(
    name: str, impl: dict[str, Any], shapes, device: torch.device, iters: int
) -> tuple[float, float, float]:
    """(seconds per steady step, first-step extra seconds, bytes moved per step)."""
    opt = random_optimizer(name, impl, shapes, device)
    sync(device)
    t0 = time.perf_counter()
    opt.step()
    sync(device)
    first = time.perf_counter() - t0
    for _ in range(2):
        opt.step()
    sync(device)
    rounds = []
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(iters):
            opt.step()
        sync(device)
        rounds.append((time.perf_counter() - t0) / iters)
    sec = statistics.median(rounds)
    pbytes = sum(p.numel() * p.element_size() for g in opt.param_groups for p in g["params"])
    moved = 3 * pbytes + 2 * state_bytes(opt) + norm_pass_bytes(opt)
    return sec, max(0.0, first - sec), moved


def norm_pass_bytes(opt: torch.optim.Optimizer) -> int:
    """The second read of g and g_prev that a per-tensor norm clip needs (MARS's branch)."""
    return sum(
        2 * s["last_grad"].numel() * s["last_grad"].element_size()
        for s in opt.state.values()
        if "last_grad" in s
    )


def perf_optimizers(
    device: str = "auto", params: str = "gpt2-small", names: list[str] | None = None,
    iters: int = 10, progress=None,
) -> tuple[dict[str, Any], list[Row]]:  # fmt: skip
    """The table of ``bench perf optimizers`` and a header describing the run."""
    from bench_cli.api import check_device

    check_device(device)  # the same line as bench run's for a device this machine lacks
    dev = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    )
    shapes = shapes_for(params)
    numel = sum(torch.Size(s).numel() for s in shapes)
    check_memory(numel, dev, params)
    chosen = names or OPTIMIZERS.names()
    for n in chosen:
        OPTIMIZERS.get(n)  # unknown names fail before anything runs
    chosen = list(dict.fromkeys(OPTIMIZERS.get(n).registry_name for n in chosen))  # each once
    bw = copy_bandwidth(dev, numel) if dev.type == "cuda" else None
    header = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "params": numel,
        "tensors": len(shapes),
        "copy_bandwidth_tb_s": bw / 1e12 if bw else None,
        # the column x_torch_fused_adamw divides by: fused AdamW has no CPU kernel
        "yardstick": f"{TORCH_ADAMW} ({'fused' if dev.type == 'cuda' else 'foreach'})",
    }
    if dev.type == "cpu":
        header["threads"] = torch.get_num_threads()
    measured: list[tuple[str, str, float, float, float]] = []
    yardstick = None
    for name in [TORCH_ADAMW, *chosen]:
        for label, impl in paths(name, dev):
            sec, once, moved = time_path(name, impl, shapes, dev, iters)
            if name == TORCH_ADAMW and label == ("fused" if dev.type == "cuda" else "foreach"):
                yardstick = sec
            measured.append((name, label, sec, once, moved))
            if progress:
                progress(f"{name:<22} {label:<8} {sec * 1e3:9.3f} ms")
    rows = []
    for name, label, sec, once, moved in measured:
        rows.append(
            Row(
                optimizer=name,
                path=label,
                ms_per_step=sec * 1e3,
                gb_per_s=moved / sec / 1e9,
                bytes_per_param=moved / numel,
                x_bound=sec / (moved / bw) if bw else None,
                x_torch_fused_adamw=sec / yardstick if yardstick else None,
                one_time_s=once,
            )
        )
    return header, rows


def as_json(header: dict[str, Any], rows: list[Row]) -> dict[str, Any]:
    return {**header, "rows": [asdict(r) for r in rows]}


def as_markdown(header: dict[str, Any], rows: list[Row]) -> str:
    bw = header.get("copy_bandwidth_tb_s")
    yardstick = "fused" if "fused" in header.get("yardstick", "fused") else "foreach"
    lines = [
        f"device: {header['device']}, torch {header['torch']}, {header['params'] / 1e6:.1f}M "
        f"params in {header['tensors']} tensors"
        + (f", copy bandwidth {bw:.2f} TB/s" if bw else ""),
        "",
        f"| optimizer | path | ms/step | GB/s | B/param | x bound | x torch {yardstick} AdamW "
        "| one-time s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        bound = f"{r.x_bound:.2f}" if r.x_bound is not None else "-"
        ref = f"{r.x_torch_fused_adamw:.2f}" if r.x_torch_fused_adamw is not None else "-"
        lines.append(
            f"| {r.optimizer} | {r.path} | {r.ms_per_step:.3f} | {_rate(r.gb_per_s)} | "
            f"{r.bytes_per_param:.0f} | {bound} | {ref} | {r.one_time_s:.2f} |"
        )
    return "\n".join(lines)


def _rate(gb_per_s: float) -> str:
    """GB/s in whole numbers from 10 on; below, two decimals (a CPU's 0.4 is not 0)."""
    return f"{gb_per_s:.0f}" if gb_per_s >= 10 else f"{gb_per_s:.2f}"
