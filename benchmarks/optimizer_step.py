"""Time one optimizer step on the parameter shapes of GPT-2 small (124M, fp32).

For each registered optimizer and each implementation (per-tensor loop, foreach; fused/compiled
where offered) prints ms per step, the effective bandwidth (bytes the update must move / time),
the ratio to torch's AdamW on the same device, and, on CUDA, how far each is from the
memory-bandwidth bound measured by a device-to-device copy in the same run.

    python benchmarks/optimizer_step.py                       # all optimizers, auto device
    python benchmarks/optimizer_step.py --device cpu --layers 2 --vocab 8192   # a quick CPU run
    python benchmarks/optimizer_step.py --markdown out.md     # also write the table

Bytes per parameter: read p and g, read and write p, and read and write every state buffer:
4 * (3 + 2 * S) for S fp32 state buffers (AdamW 28, AdEMAMix 36, Lion 20).
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_cli.perf import copy_bandwidth, gpt2_shapes, sync  # noqa: E402
from bench_cli.registry import OPTIMIZERS, build_optimizer  # noqa: E402
from bench_cli.registry._base import state_bytes  # noqa: E402


def time_step(name: str, impl: dict, shapes, device, warmup: int, iters: int):
    torch.manual_seed(0)
    params = [torch.randn(s, device=device) * 0.02 for s in shapes]
    for p in params:
        p.requires_grad_(True)
        p.grad = torch.randn_like(p) * 1e-3
    extra = {"lr": 1e-3} if name == "aggmo" else {}
    if name == "torch.optim.AdamW":
        opt = torch.optim.AdamW(params, lr=1e-3, **impl)
    else:
        opt = build_optimizer(name, params, **extra, **impl)
    if getattr(opt, "has_train_eval_modes", False):
        opt.train()
    if getattr(opt, "needs_lookahead_grad", False):
        return None
    for _ in range(warmup):
        opt.step()
    sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        opt.step()
        sync(device)
        times.append(time.perf_counter() - t0)
    n_param_bytes = sum(p.numel() for p in params) * 4
    buffers = round(state_bytes(opt) / n_param_bytes)
    return statistics.median(times), buffers, n_param_bytes


def implementations(name: str, device: torch.device) -> list[tuple[str, dict]]:
    cls = torch.optim.AdamW if name == "torch.optim.AdamW" else OPTIMIZERS.get(name)
    args = inspect.signature(cls.__init__).parameters
    out = []
    if "foreach" in args:
        out += [("loop", {"foreach": False}), ("foreach", {"foreach": True})]
    else:
        out.append(("default", {}))
    if "fused" in args and device.type == "cuda":
        out.append(("fused", {"fused": True}))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--vocab", type=int, default=50304)
    ap.add_argument("--opt", default="all", help="comma-separated names (default: all)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--markdown", type=Path, help="also write the table here")
    ap.add_argument(
        "--check-foreach",
        action="store_true",
        help="exit 1 if a foreach path is slower than its loop",
    )
    args = ap.parse_args()

    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    shapes = gpt2_shapes(n_layer=args.layers, vocab=args.vocab)
    numel = sum(torch.Size(s).numel() for s in shapes)
    names = ["torch.optim.AdamW"] + (
        OPTIMIZERS.names() if args.opt == "all" else args.opt.split(",")
    )
    bw = copy_bandwidth(device, numel) if device.type == "cuda" else None
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    header = (
        f"device: {dev_name}, torch {torch.__version__}, {numel / 1e6:.1f}M fp32 params "
        f"in {len(shapes)} tensors" + (f", copy bandwidth {bw / 1e12:.2f} TB/s" if bw else "")
    )
    print(header)

    rows = []
    baseline = None
    slower = []
    for name in names:
        per_impl = {}
        for label, impl in implementations(name, device):
            res = time_step(name, impl, shapes, device, args.warmup, args.iters)
            if res is None:
                continue
            sec, buffers, pbytes = res
            moved = pbytes * (3 + 2 * buffers)
            if name == "torch.optim.AdamW" and label == "foreach":
                baseline = sec  # the yardstick: torch's AdamW, foreach, on the same device
            per_impl[label] = sec
            rows.append(
                [
                    name,
                    label,
                    sec * 1e3,
                    moved / sec / 1e9,
                    buffers,
                    moved / bw / sec if bw else None,
                    sec,
                ]
            )
            print(f"  {name:<20} {label:<8} {sec * 1e3:9.2f} ms", flush=True)
        loop, fe = per_impl.get("loop"), per_impl.get("foreach")
        if name != "torch.optim.AdamW" and loop and fe and fe > loop:
            slower.append(name)

    lines = [
        header,
        "",
        "| optimizer | impl | ms/step | GB/s | state buffers | x torch AdamW | x bound |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, label, ms, gbs, buffers, frac, sec in rows:
        bound = f"{1 / frac:.2f}" if frac else "-"
        lines.append(
            f"| {name} | {label} | {ms:.2f} | {gbs:.0f} | {buffers} | "
            f"{sec / baseline:.2f} | {bound} |"
        )
    table = "\n".join(lines)
    print()
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")
    if slower:
        print(f"foreach slower than the loop for: {', '.join(slower)}")
        if args.check_foreach:
            sys.exit(1)


if __name__ == "__main__":
    main()
