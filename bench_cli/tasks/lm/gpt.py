"""A small GPT (nanoGPT's architecture: pre-norm blocks, causal SDPA attention, tied embeddings)
and what every GPT task shares: its options, bf16 autocast on CUDA, the loss, and evaluation.

Evaluation. Every LM task scores the validation loss on fixed windows drawn once (the same for
every run, seed and optimizer) and records the standard error of that estimate, ``val_loss_se``.
The text tasks draw one window start in each of equal strata of the validation split and
estimate the loss over every start of the split with the collapsed-strata standard error
(``sampling.py``); ``lm-markov`` draws independent windows of its source, whose standard error
is the standard deviation of the window losses over the square root of their number.
``train_loss`` is not evaluated again: it is the mean of the training losses of the steps since
the previous evaluation (with dropout, as trained), summed on the device and read once per
evaluation, so it costs nothing.
Each task's ``eval_batches`` is sized so that ``val_loss_se`` stays below 0.005 nats while
evaluation takes at most 15% of the training time at its default settings (see each task). On
data whose windows differ more (source code, for one), ``bench run`` ends with a note naming the
``eval_batches`` that would bring the worst ``val_loss_se`` of each run to 0.005.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from bench_cli.tasks.base import Task, TaskOptions


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool):
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head})")
        self.n_head = n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C)))


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd, bias=bias),
            nn.GELU(),
            nn.Linear(4 * n_embd, n_embd, bias=bias),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        n_layer: int,
        n_head: int,
        n_embd: int,
        dropout: float = 0.0,
        bias: bool = False,
    ):
        super().__init__()
        self.block_size = block_size
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, dropout, bias) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, bias=bias)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight") or name.endswith("mlp.2.weight"):
                # residual projections scaled by depth (GPT-2)
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


# -- what GPT tasks share ------------------------------------------------------------------------


class GPTOptions(TaskOptions):
    n_layer: int = Field(4, ge=1)
    n_head: int = Field(4, ge=1)
    n_embd: int = Field(128, ge=1)
    block_size: int = Field(64, ge=2)
    batch_size: int = Field(12, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    eval_batches: int = Field(20, ge=1, description="validation batches per evaluation")
    autocast: Literal["auto", "off", "bf16"] = "auto"

    @model_validator(mode="after")
    def _consistent(self) -> GPTOptions:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.eval_batches * self.batch_size < 2:
            raise ValueError(
                "evaluation needs at least 2 validation windows (eval_batches x batch_size) "
                "for the standard error of val_loss; raise eval_batches"
            )
        return self


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


class GPTTask(Task):
    """A GPT trained on next-token prediction; subclasses supply the data and ``vocab_size``."""

    Options = GPTOptions
    unit = "tokens"
    metric_directions = {
        "val_loss": "min",
        "val_loss_se": "min",
        "train_loss": "min",
    }
    #: the first target of a window that is scored (lm-markov skips targets whose context the
    #: window cuts off)
    first_scored = 0
    vocab_size: int
    device: torch.device

    def __init__(self, options: GPTOptions):
        super().__init__(options)
        self._train_sum: torch.Tensor | float = 0.0
        self._train_count = 0

    @property
    def units_per_step(self) -> int:
        return self.options.batch_size * self.options.block_size

    def _vocab_for_memory(self) -> int:
        return getattr(self, "vocab_size", None) or 256

    @property
    def memory_gib(self) -> float:
        """fp32 weights, gradients and up to three fp32 optimizer states (20 bytes a parameter),
        activations (about 34 bytes per layer, token and width in bf16, with flash attention;
        twice that in fp32), and the logits with their fp32 copy and gradient; plus 20% and
        0.75 GiB for the CUDA context."""
        o = self.options
        vocab, tokens = self._vocab_for_memory(), o.batch_size * o.block_size
        params = 12 * o.n_layer * o.n_embd**2 + (vocab + o.block_size) * o.n_embd
        act_bytes = 34 * (1 if o.autocast != "off" else 2)
        total = 20 * params + act_bytes * o.n_layer * tokens * o.n_embd + 10 * tokens * vocab
        return round(1.2 * total / 2**30 + 0.75, 2)

    def build_model(self) -> nn.Module:
        o = self.options
        return GPT(self.vocab_size, o.block_size, o.n_layer, o.n_head, o.n_embd, o.dropout)

    def _autocast(self):
        mode = self.options.autocast
        if mode == "bf16" or (mode == "auto" and self.device.type == "cuda"):
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def window_losses(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
        """The mean loss of each window of ``batch`` over its scored targets, in float32."""
        x, y = batch
        with self._autocast():
            logits = model(x)
        k = self.first_scored
        logits, y = logits[:, k:].float(), y[:, k:]
        nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="none")
        return nll.view(y.shape).mean(dim=1)

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        loss = self.window_losses(model, batch).mean()
        if torch.is_grad_enabled():  # a training step: its loss feeds ``train_loss``
            self._train_sum = self._train_sum + loss.detach()
            self._train_count += 1
        return loss

    def eval_chunk(self) -> int:
        """Windows per evaluation forward pass: a training batch, or more where that holds
        fewer than 8,192 tokens (on a CPU, passes of 4k-8k tokens cost least per window)."""
        o = self.options
        return max(o.batch_size, 8192 // o.block_size)

    def train_loss(self) -> dict[str, float]:
        """``train_loss`` over the steps since the last call (nothing before the first step)."""
        if not self._train_count:
            return {}
        value = float(self._train_sum) / self._train_count
        self._train_sum, self._train_count = 0.0, 0
        return {"train_loss": value}
