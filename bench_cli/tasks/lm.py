"""Character-level (or byte-level) language models on a text file, Tiny Shakespeare by default."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from bench_cli.errors import DataError
from bench_cli.results.record import Target
from bench_cli.tasks import TASKS
from bench_cli.tasks._gpt import GPT
from bench_cli.tasks.base import Task, TaskOptions
from bench_cli.tasks.data import TINY_SHAKESPEARE, locate

#: evaluation batches are the same for every run, seed and optimizer
EVAL_SEED = 1337


class LMOptions(TaskOptions):
    data: str | None = Field(None, description="a UTF-8 text file (default: Tiny Shakespeare)")
    tokenizer: Literal["char", "bytes"] = "char"
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    n_layer: int = Field(4, ge=1)
    n_head: int = Field(4, ge=1)
    n_embd: int = Field(128, ge=1)
    block_size: int = Field(64, ge=2)
    batch_size: int = Field(12, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    eval_batches: int = Field(20, ge=1)
    autocast: Literal["auto", "off", "bf16"] = "auto"


def encode_text(raw: bytes, tokenizer: str, source: str) -> tuple[torch.Tensor, int]:
    """Token ids (int64) and vocabulary size: sorted distinct characters, or raw bytes."""
    if tokenizer == "bytes":
        return torch.frombuffer(bytearray(raw), dtype=torch.uint8).long(), 256
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{source} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
            "use --set tokenizer=bytes for arbitrary bytes"
        ) from exc
    chars = sorted(set(text))
    lookup = {ch: i for i, ch in enumerate(chars)}
    return torch.tensor([lookup[ch] for ch in text], dtype=torch.long), len(chars)


class CharLM(Task):
    """A GPT on a text file: next-character prediction, 90/10 train/validation split."""

    Options = LMOptions
    unit = "tokens"
    metric_directions = {"val_loss": "min", "train_loss": "min"}
    BASELINE = dict(lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)

    def prepare(self, device: torch.device) -> None:
        o = self.options
        path = locate(TINY_SHAKESPEARE, o.data)
        tokens, self.vocab_size = encode_text(Path(path).read_bytes(), o.tokenizer, str(path))
        n_val = int(len(tokens) * o.val_fraction)
        if len(tokens) - n_val <= o.block_size + 1 or n_val <= o.block_size + 1:
            raise DataError(
                f"{path} is too short ({len(tokens)} tokens) for block_size {o.block_size}"
            )
        self.device = device
        self.train_data = tokens[:-n_val].to(device)
        self.val_data = tokens[-n_val:].to(device)
        gen = torch.Generator().manual_seed(EVAL_SEED)
        self.eval_offsets = {
            split: torch.randint(
                len(data) - o.block_size - 1, (o.eval_batches, o.batch_size), generator=gen
            ).to(device)
            for split, data in (("val", self.val_data), ("train", self.train_data))
        }
        self._arange = torch.arange(o.block_size + 1, device=device)

    @property
    def units_per_step(self) -> int:
        return self.options.batch_size * self.options.block_size

    def build_model(self) -> nn.Module:
        o = self.options
        return GPT(self.vocab_size, o.block_size, o.n_layer, o.n_head, o.n_embd, o.dropout)

    def _batch(
        self, data: torch.Tensor, offsets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        chunk = data[offsets[:, None] + self._arange]
        return chunk[:, :-1], chunk[:, 1:]

    def batches(self, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        o = self.options
        gen = torch.Generator().manual_seed(seed)
        high = len(self.train_data) - o.block_size - 1
        while True:
            offsets = torch.randint(high, (o.batch_size,), generator=gen)
            yield self._batch(self.train_data, offsets.to(self.device, non_blocking=True))

    def _autocast(self):
        mode = self.options.autocast
        if mode == "bf16" or (mode == "auto" and self.device.type == "cuda"):
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        with self._autocast():
            logits = model(x)
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        out = {}
        for split, data in (("val", self.val_data), ("train", self.train_data)):
            losses = torch.stack(
                [
                    self.loss(model, self._batch(data, offsets))
                    for offsets in self.eval_offsets[split]
                ]
            )
            out[f"{split}_loss"] = float(losses.mean())  # one sync per split
        return out


class LMSmallOptions(LMOptions):
    PRESETS = {
        "default": {},
        "tiny": dict(n_layer=1, n_head=2, n_embd=32, block_size=32, batch_size=4, eval_batches=2),
    }


@TASKS.register("lm-small")
class LMSmall(CharLM):
    """Character-level GPT on Tiny Shakespeare, sized like nanoGPT's CPU configuration.

    4 layers, 4 heads, width 128, context 64, batch 12, no dropout; 2,000 steps, lr 1e-3 with 100
    warmup steps and cosine decay to 1e-4, AdamW betas (0.9, 0.99), weight decay 0.1 on matrices;
    90/10 train/validation split. Target: validation loss 2.0. Unit: tokens (768 per step).
    Data: --data PATH, else $BENCH_DATA_DIR/tinyshakespeare.txt, else the cache, else a download.
    """

    Options = LMSmallOptions
    SETTINGS = {
        "default": dict(
            steps=2000,
            warmup_steps=100,
            schedule="cosine",
            min_lr_ratio=0.1,
            grad_clip=1.0,
            eval_interval=100,
            log_interval=10,
        ),
        "tiny": dict(
            steps=20,
            warmup_steps=2,
            schedule="cosine",
            min_lr_ratio=0.1,
            grad_clip=1.0,
            eval_interval=10,
            log_interval=5,
        ),
    }
    TARGETS = {
        "default": Target(metric="val_loss", value=2.0),
        "tiny": Target(metric="val_loss", value=3.5),
    }
