"""Two of nanoGPT's configurations: ``shakespeare_char`` (lm-medium) and GPT-2 small (lm-gpt2)."""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import Field
from torch import nn

from bench_cli.errors import DataError
from bench_cli.results.record import Target
from bench_cli.tasks import TASKS
from bench_cli.tasks.lm import GPT2_VOCAB, CharLM, LMOptions, is_shards

_TINY = dict(n_layer=1, n_head=2, n_embd=32, block_size=32, batch_size=4, eval_batches=2)


def _tiny_settings() -> dict:
    return dict(
        steps=20,
        warmup_steps=2,
        schedule="cosine",
        min_lr_ratio=0.1,
        grad_clip=1.0,
        eval_interval=10,
        log_interval=5,
    )


def nanogpt_param_groups(model: nn.Module) -> list[dict]:
    """nanoGPT's grouping: every parameter of two or more dimensions is decayed (embeddings and
    the tied output matrix too); biases and norms are not."""
    params = [p for p in model.parameters() if p.requires_grad]  # the tied matrix comes once
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"name": "decay", "params": decay}]
    if no_decay:
        groups.append({"name": "no_decay", "params": no_decay, "weight_decay": 0.0})
    return groups


class LMMediumOptions(LMOptions):
    PRESETS = {"default": {}, "tiny": _TINY}

    n_layer: int = Field(6, ge=1)
    n_head: int = Field(6, ge=1)
    n_embd: int = Field(384, ge=1)
    block_size: int = Field(256, ge=2)
    batch_size: int = Field(64, ge=1)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    eval_batches: int = Field(200, ge=1)


@TASKS.register("lm-medium")
class LMMedium(CharLM):
    """Character-level GPT on Tiny Shakespeare: nanoGPT's shakespeare_char configuration.

    6 layers, 6 heads, width 384, context 256, batch 64, dropout 0.2 (10.7M parameters); 5,000
    steps, lr 1e-3 with 100 warmup steps and cosine decay to 1e-4, AdamW betas (0.9, 0.99),
    weight decay 0.1 on every matrix (embeddings included, as nanoGPT), grad clip 1.0; 90/10
    split; evaluation every 250 steps on 200 fixed batches per split. nanoGPT reports a best
    validation loss of 1.4697; target: validation loss 1.55. Unit: tokens (16,384 per step).
    A GPU task: bf16 autocast on CUDA, --compile for torch.compile. Data as for lm-small.
    """

    Options = LMMediumOptions
    SETTINGS = {
        "default": dict(
            steps=5000,
            warmup_steps=100,
            schedule="cosine",
            min_lr_ratio=0.1,
            grad_clip=1.0,
            eval_interval=250,
            log_interval=10,
        ),
        "tiny": _tiny_settings(),
    }
    TARGETS = {
        "default": Target(metric="val_loss", value=1.55),
        "tiny": Target(metric="val_loss", value=3.5),
    }

    def param_groups(self, model: nn.Module) -> list[dict]:
        return nanogpt_param_groups(model)


class LMGPT2Options(LMOptions):
    PRESETS = {"default": {}, "tiny": _TINY}

    vocab_size: int | None = Field(GPT2_VOCAB, ge=2, description="GPT-2's 50,257, padded")
    n_layer: int = Field(12, ge=1)
    n_head: int = Field(12, ge=1)
    n_embd: int = Field(768, ge=1)
    block_size: int = Field(1024, ge=2)
    batch_size: int = Field(32, ge=1)
    eval_batches: int = Field(20, ge=1)


@TASKS.register("lm-gpt2")
class LMGPT2(CharLM):
    """GPT-2 small (124M) on your token shards, for GPUs, e.g. FineWeb as modded-nanogpt has it.

    12 layers, 12 heads, width 768, context 1,024, vocabulary 50,304, no dropout, tied
    embeddings; batch 32 (32,768 tokens per step, no gradient accumulation); 10,000 steps
    (328M tokens), lr 6e-4 with 500 warmup steps and cosine decay to 6e-5, AdamW betas
    (0.9, 0.95), weight decay 0.1 on every matrix, grad clip 1.0; evaluation every 500 steps on
    20 fixed batches per split. Target: validation loss 3.8 (an estimate for this budget).
    Data (required): --data FOLDER of llm.c / modded-nanogpt .bin shards, *train*.bin for
    training and *val*.bin for validation (else the last 10% of the tokens). Unit: tokens.
    """

    Options = LMGPT2Options
    BASELINE = dict(lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1)
    SETTINGS = {
        "default": dict(
            steps=10_000,
            warmup_steps=500,
            schedule="cosine",
            min_lr_ratio=0.1,
            grad_clip=1.0,
            eval_interval=500,
            log_interval=10,
        ),
        "tiny": _tiny_settings(),
    }
    TARGETS = {
        "default": Target(metric="val_loss", value=3.8),
        "tiny": Target(metric="val_loss", value=10.7),
    }

    def prepare(self, device: torch.device) -> None:
        data = self.options.data
        if data is None:
            raise DataError(
                "lm-gpt2 trains on token shards that you supply: pass --data FOLDER holding "
                "llm.c / modded-nanogpt .bin shards (e.g. fineweb_train_*.bin, fineweb_val_*.bin)"
            )
        if Path(data).expanduser().exists() and not is_shards(Path(data).expanduser()):
            raise DataError(
                f"{data} holds no .bin token shards; lm-gpt2 reads GPT-2 tokens in llm.c / "
                "modded-nanogpt .bin shards, not text"
            )
        super().prepare(device)

    def param_groups(self, model: nn.Module) -> list[dict]:
        return nanogpt_param_groups(model)
