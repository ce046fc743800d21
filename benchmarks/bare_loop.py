"""A bare, hand-written nanoGPT-style training loop: the yardstick of ``bench perf loop``.

It trains the GPT of the text LM tasks (``lm-small``, ``lm-medium``) with nothing but torch:
the text is read and encoded here (sorted distinct characters, or bytes; the last
``val_fraction`` held out), batches are window starts drawn from ``torch.Generator`` seeded with
the run's seed, the optimizer is ``torch.optim.AdamW`` (fused on CUDA, foreach on a CPU) with
nanoGPT's two parameter groups, bf16 autocast on CUDA, and nanoGPT's order: set the lr (linear
warmup, then cosine or linear decay), forward, backward, clip, step, ``zero_grad``; the loss is
read on the host only every ``log_interval`` steps. The only thing taken from the package is the
model class, so that both loops train the same network from the same initial weights.

Timing is the run loop's: the first step (allocator and kernel warm-up) is a one-time cost, the
clock starts after it and stops after a device sync at the end, so ``steps - 1`` steps are timed.

    python benchmarks/bare_loop.py --data tinyshakespeare.txt --device cuda --steps 500
"""

from __future__ import annotations

import argparse
import json
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from bench_cli.tasks.lm.gpt import GPT


@dataclass
class BareConfig:
    """Everything the loop needs; the defaults are lm-medium's (nanoGPT's shakespeare_char)."""

    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    block_size: int = 256
    batch_size: int = 64
    dropout: float = 0.2
    tokenizer: str = "char"
    vocab_size: int | None = None
    val_fraction: float = 0.1
    steps: int = 500
    warmup_steps: int = 100
    schedule: str = "cosine"
    min_lr_ratio: float = 0.1
    grad_clip: float | None = 1.0
    log_interval: int = 10
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.99)
    eps: float = 1e-8
    weight_decay: float = 0.1
    amsgrad: bool = False
    #: nanoGPT decays every matrix, embeddings too; False leaves the embeddings undecayed
    decay_embeddings: bool = True
    autocast: bool = False
    compile: bool = False
    seed: int = 0


def text_tokens(path: Path, tokenizer: str, val_fraction: float) -> tuple[torch.Tensor, int]:
    """The training part of a text file as int64 ids, and the vocabulary size."""
    raw = Path(path).read_bytes()
    if tokenizer == "bytes":
        ids = torch.frombuffer(bytearray(raw), dtype=torch.uint8).long()
        vocab = 256
    else:
        text = raw.decode("utf-8")
        chars = sorted(set(text))
        lookup = {ch: i for i, ch in enumerate(chars)}
        ids = torch.tensor([lookup[ch] for ch in text], dtype=torch.long)
        vocab = len(chars)
    cut = len(ids) - int(len(ids) * val_fraction)
    return ids[:cut], vocab


def lr_mult(it: int, cfg: BareConfig) -> float:
    if it < cfg.warmup_steps:
        return (it + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    frac = min(1.0, (it - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    if cfg.schedule == "cosine":
        return cfg.min_lr_ratio + 0.5 * (1 - cfg.min_lr_ratio) * (1 + math.cos(math.pi * frac))
    return 1.0 - (1.0 - cfg.min_lr_ratio) * frac


def train(cfg: BareConfig, data_path: Path, device: torch.device) -> dict:
    """Train for ``cfg.steps`` steps; tokens/s over the timed steps and the logged losses."""
    data, vocab = text_tokens(data_path, cfg.tokenizer, cfg.val_fraction)
    data = data.to(device)
    window = cfg.block_size + 1
    n_starts = len(data) - window
    offsets = torch.arange(window, device=device)
    gen = torch.Generator().manual_seed(cfg.seed)

    torch.manual_seed(cfg.seed)
    model = GPT(
        cfg.vocab_size or vocab, cfg.block_size, cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.dropout
    ).to(device)
    embeddings = {id(model.wte.weight), id(model.wpe.weight)}
    params = list(model.parameters())
    decay = [
        p for p in params if p.dim() >= 2 and (cfg.decay_embeddings or id(p) not in embeddings)
    ]
    no_decay = [p for p in params if all(p is not q for q in decay)]
    cuda = device.type == "cuda"
    opt = torch.optim.AdamW(
        [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=tuple(cfg.betas),
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
        amsgrad=cfg.amsgrad,
        **({"fused": True} if cuda else {"foreach": True}),
    )
    fwd = torch.compile(model) if cfg.compile else model
    ctx = torch.autocast(device.type, dtype=torch.bfloat16) if cfg.autocast else nullcontext()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    losses: dict[int, float] = {}
    model.train()
    t0 = time.perf_counter()
    for it in range(cfg.steps):
        lr = cfg.lr * lr_mult(it, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        starts = torch.randint(n_starts, (cfg.batch_size,), generator=gen)
        chunk = data[starts.to(device, non_blocking=True)[:, None] + offsets]
        x, y = chunk[:, :-1], chunk[:, 1:]
        with ctx:
            logits = fwd(x)
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))
        loss.backward()
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if it == 0:  # warm-up is a one-time cost: the clock starts after the first step
            sync()
            t0 = time.perf_counter()
        if (it + 1) % cfg.log_interval == 0 or it + 1 == cfg.steps:
            losses[it + 1] = loss.item()
    sync()
    seconds = time.perf_counter() - t0
    timed = cfg.steps - 1
    tokens = timed * cfg.batch_size * cfg.block_size
    return {
        "steps_timed": timed,
        "seconds": seconds,
        "tokens_per_second": tokens / seconds if timed and seconds > 0 else None,
        "losses": losses,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="a UTF-8 text file")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--compile", action="store_true")
    args = p.parse_args()
    device = torch.device(args.device)
    cfg = BareConfig(steps=args.steps, autocast=device.type == "cuda", compile=args.compile)
    out = train(cfg, args.data, device)
    print(json.dumps({"config": asdict(cfg), **out}, indent=1))


if __name__ == "__main__":
    main()
