"""``lm-markov``: a synthetic language that never repeats, with an exact loss floor.

The source is a random sparse Markov language of order ``k`` over ``V`` symbols. For each order
j = 1..k, each context of the last j symbols has ``support`` next symbols drawn uniformly (with
replacement; a symbol drawn twice keeps both weights) and Dirichlet(``concentration``) weights on
them; a context's next-symbol distribution mixes its k components with weights proportional to
``backoff**(k - j)``, so every order carries information a model can learn in turn (a pure
order-k source gives a model of lower order none, and training sits on a plateau at the unigram
loss). The table is built once with numpy from ``source_seed``, so the language is the same on
every machine and for every run seed.

Every window is a fresh chain: its first ``k`` symbols are uniform, the rest follow the source.
Targets whose context the window cuts off (the first ``k - 1``) are not scored, so the
Bayes-optimal loss of a window is exactly the mean of ``-log p(next | context)`` over its scored
targets under the true conditionals: the ``floor``. Training windows are generated on the device
in chunks of about a million tokens, each chunk from a generator seeded by (run seed, chunk
index): the stream never repeats, and ``batches_from`` jumps to any step for the cost of one
chunk. The stream is fixed per seed and device type (CPU and CUDA generators differ). The
validation windows come from their own seed, generated on the CPU, and are the same for every
run and device.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Iterator

import numpy as np
import torch
from pydantic import Field

from bench_cli.errors import ConfigError
from bench_cli.results.record import Target
from bench_cli.tasks import TASKS
from bench_cli.tasks.base import Preset, run_settings
from bench_cli.tasks.lm.gpt import GPTOptions, GPTTask, nanogpt_param_groups

#: the validation windows' generator seed namespace (never used for training)
VAL_STREAM = "validation"
TRAIN_STREAM = "training"
PROBE_STREAM = "probe"
#: tokens generated per chunk of the training stream (about)
CHUNK_TOKENS = 1 << 20


def stream_seed(stream: str, seed: int, chunk: int) -> int:
    """A 63-bit generator seed for one chunk of one stream (a CPU generator keeps 32 bits)."""
    digest = hashlib.sha256(f"{stream}:{seed}:{chunk}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class MarkovSource:
    """The language: ``nexts[c]`` are context ``c``'s next symbols, ``weights[c]`` their
    probabilities. A context is ``sum_i x_{t-k+i} V**(k-1-i)``: the newest symbol last.

    The conditionals back off: for each order j = 1..k, every context of the last j symbols has
    its own ``support`` next symbols with Dirichlet weights, and a context's distribution is the
    mixture of its k components with weights proportional to ``backoff**(k - j)``. So each
    order adds information (a pure order-k source, ``backoff`` 0, gives none to a model of
    lower order: it sits on a plateau at the unigram loss)."""

    def __init__(
        self,
        vocab: int,
        order: int,
        support: int,
        concentration: float,
        seed: int,
        backoff: float = 1.0,
    ):
        self.vocab, self.order = vocab, order
        self.n_contexts = vocab**order
        rng = np.random.default_rng(seed)
        mix = np.array([backoff ** (order - j) for j in range(1, order + 1)])
        mix /= mix.sum()
        contexts = np.arange(self.n_contexts)
        nexts, weights = [], []
        for j, share in zip(range(1, order + 1), mix):
            n = vocab**j
            sym = rng.integers(vocab, size=(n, support))
            w = rng.gamma(concentration, size=(n, support)) + 1e-12
            if share > 0:
                nexts.append(sym[contexts % n])
                weights.append(share * (w / w.sum(axis=1, keepdims=True))[contexts % n])
        self.nexts = np.concatenate(nexts, axis=1)
        self.weights = np.concatenate(weights, axis=1)
        self.support = self.nexts.shape[1]
        self._tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(next symbols, cumulative weights in float32) on ``device``."""
        if device not in self._tables:
            cum = torch.from_numpy(np.cumsum(self.weights, axis=1)).float()
            self._tables[device] = (torch.from_numpy(self.nexts).to(device), cum.to(device))
        return self._tables[device]

    def generate(self, n: int, length: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` fresh chains of ``length`` symbols (int64) on the generator's device."""
        device = generator.device
        nexts, cum = self.tables(device)
        k, V = self.order, self.vocab
        out = torch.empty(n, length, dtype=torch.long, device=device)
        out[:, :k] = torch.randint(V, (n, k), generator=generator, device=device)
        u = torch.rand(n, max(0, length - k), generator=generator, device=device)
        ctx = torch.zeros(n, dtype=torch.long, device=device)
        for i in range(k):
            ctx = ctx * V + out[:, i]
        for t in range(k, length):
            j = (u[:, t - k, None] >= cum[ctx]).sum(dim=1).clamp_(max=self.support - 1)
            sym = nexts[ctx, j]
            out[:, t] = sym
            ctx = (ctx * V + sym) % self.n_contexts
        return out

    def contexts(self, windows: torch.Tensor) -> torch.Tensor:
        """The context of every position ``t >= k`` of each window: (n, length - k)."""
        k, V = self.order, self.vocab
        ctx = torch.zeros_like(windows[:, k:])
        for i in range(k):
            ctx = ctx * V + windows[:, i : windows.shape[1] - k + i]
        return ctx

    def nll(self, windows: torch.Tensor) -> torch.Tensor:
        """``-log p(x_t | context)`` (float64) for every position ``t >= k`` of each window."""
        windows = windows.cpu()
        ctx = self.contexts(windows).numpy()
        sym = windows[:, self.order :].numpy()
        p = ((self.nexts[ctx] == sym[..., None]) * self.weights[ctx]).sum(axis=-1)
        return torch.from_numpy(-np.log(p))

    def log_probs(self) -> torch.Tensor:
        """The dense table of ``log p(next | context)``: (contexts, V), float64."""
        p = np.zeros((self.n_contexts, self.vocab))
        np.add.at(p, (np.arange(self.n_contexts)[:, None], self.nexts), self.weights)
        with np.errstate(divide="ignore"):
            return torch.from_numpy(np.log(p))


class MarkovOptions(GPTOptions):
    vocab: int = Field(64, ge=2, le=65536, description="V, the number of symbols")
    order: int = Field(3, ge=1, description="k, the symbols a context holds")
    support: int = Field(16, ge=1, description="next symbols drawn per context")
    concentration: float = Field(0.5, gt=0.0, description="Dirichlet concentration of weights")
    backoff: float = Field(
        1.0, ge=0.0, le=1.0, description="weight of order j-1 relative to order j in the mixture"
    )
    source_seed: int = Field(0, ge=0, description="the seed that draws the language")
    n_layer: int = Field(6, ge=1)
    n_head: int = Field(6, ge=1)
    n_embd: int = Field(384, ge=1)
    block_size: int = Field(256, ge=2)
    batch_size: int = Field(64, ge=1)
    eval_batches: int = Field(16, ge=1)
    probe_batch_step: int | None = Field(
        None, ge=0, description="inject a fresh batch at this step and track its loss"
    )


_REFERENCES: dict[tuple, dict[str, float]] = {}


@functools.lru_cache(maxsize=4)
def _source(vocab: int, order: int, support: int, concentration: float, seed: int, backoff: float):
    return MarkovSource(vocab, order, support, concentration, seed, backoff)


@TASKS.register("lm-markov")
class LMMarkov(GPTTask):
    """A GPT on a random sparse Markov language of order k: a stream that never repeats, with a
    known optimum.

    Default: V = 64 symbols, order k = 3 (262,144 contexts); for each order 1, 2, 3, 16 next
    symbols per context with Dirichlet(0.5) weights, mixed in equal parts (backoff 1); the GPT of lm-medium (6 layers, 6 heads, width 384, context 256,
    batch 64, no dropout); 6,000 steps (98M tokens, every one fresh), lr 1e-3 with 200 warmup
    steps and cosine decay to 1e-4, AdamW betas (0.9, 0.95), weight decay 0.1 on every matrix,
    grad clip 1.0; evaluation every 250 steps on 16 fixed batches (1,024 windows).
    Target: gap <= 0.5 (AdamW, seed 0, crosses it at step 4,250 on an H200, after 58 s of
    training at 1.2M tokens/s; floor 2.93, bigram 3.83, unigram 4.15 nats; PERFORMANCE.md).
    ``long``: the same language and model for 120,000 steps (1.97B tokens, 18-27 min on one H200
    at 1.2-1.8M tokens/s); target gap <= 0.4, provisional: not measured at this length (cut to
    15,000 steps, 246M tokens, AdamW's median best gap was 0.28 over six seeds;
    docs/results.md). ``tiny``: V = 8,
    k = 2, a one-layer GPT, seconds on a CPU.
    Metrics: val_loss and its standard error, ``floor`` (the Bayes-optimal loss on the same
    validation windows, from the true conditionals), ``gap`` = val_loss - floor (the target) and
    its standard error ``gap_se``, train_loss. The floor, and the losses of the best unigram and
    bigram models, are printed below for each preset. Unit: tokens. Difficulty: --set vocab=V,
    order=K, support=S, concentration=C, source_seed=N. The forgetting probe (--set
    probe_batch_step=K): a batch of its own stream (fresh, like every batch here) replaces the
    K-th batch (0-based); its loss is ``probe_loss`` at every evaluation, before the injection too.
    """

    Options = MarkovOptions
    BASELINE = dict(lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    metric_directions = {
        **GPTTask.metric_directions,
        "probe_loss": "min",
        "gap": "min",
        "gap_se": "min",
        "floor": "min",
    }
    PRESETS = {
        "default": Preset(
            run_settings(6000, 250, warmup_steps=200, log_interval=10),
            Target(metric="gap", value=0.5),
        ),
        "long": Preset(
            run_settings(120_000, 2500, warmup_steps=1000, log_interval=50),
            Target(metric="gap", value=0.4),
        ),
        "tiny": Preset(
            run_settings(100, 25, warmup_steps=10, log_interval=25),
            Target(metric="gap", value=1.3),
            dict(
                vocab=8,
                order=2,
                support=3,
                n_layer=1,
                n_head=2,
                n_embd=32,
                block_size=32,
                batch_size=8,
                eval_batches=8,
            ),
        ),
    }

    @property
    def source(self) -> MarkovSource:
        o = self.options
        return _source(o.vocab, o.order, o.support, o.concentration, o.source_seed, o.backoff)

    @property
    def first_scored(self) -> int:  # the first target whose whole context is in the window
        return self.options.order - 1

    @property
    def vocab_size(self) -> int:
        return self.options.vocab

    def validation_windows(self) -> torch.Tensor:
        """The fixed validation windows (CPU): eval_batches x batch_size of them."""
        o = self.options
        gen = torch.Generator().manual_seed(stream_seed(VAL_STREAM, 0, 0))
        return self.source.generate(o.eval_batches * o.batch_size, o.block_size + 1, gen)

    def prepare(self, device: torch.device) -> None:
        o = self.options
        if o.order >= o.block_size:
            raise ConfigError(f"order {o.order} must be below block_size {o.block_size}")
        if device.type == "cuda" and device.index is None:  # generators need the index
            device = torch.device("cuda", torch.cuda.current_device())
        self.device = device
        val = self.validation_windows()
        window_floor = self.source.nll(val).mean(dim=1)  # every scored target of a window
        self._floor = window_floor.to(device)
        self.floor = float(window_floor.mean())
        self.val_batches = val.to(device).split(self.eval_chunk())

    def param_groups(self, model):
        return nanogpt_param_groups(model)

    def _chunk_batches(self) -> int:
        o = self.options
        return max(1, min(256, CHUNK_TOKENS // (o.batch_size * (o.block_size + 1))))

    def batches(self, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.batches_from(seed, 0)

    def batches_from(self, seed: int, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        o = self.options
        self._train_sum, self._train_count = 0.0, 0
        self._probe = None
        if o.probe_batch_step is not None:  # from its own stream: never trained on otherwise
            gen = torch.Generator(device=self.device)
            gen.manual_seed(stream_seed(PROBE_STREAM, seed, 0))
            self._probe = self.source.generate(o.batch_size, o.block_size + 1, gen)
        return self._stream(seed, step)

    def _stream(self, seed: int, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        o, per = self.options, self._chunk_batches()
        chunk, skip = divmod(step, per)
        gen = torch.Generator(device=self.device)
        while True:
            gen.manual_seed(stream_seed(TRAIN_STREAM, seed, chunk))
            windows = self.source.generate(per * o.batch_size, o.block_size + 1, gen)
            for i, b in enumerate(windows.split(o.batch_size)[skip:], start=chunk * per + skip):
                if i == o.probe_batch_step:
                    b = self._probe
                yield b[:, :-1], b[:, 1:]
            chunk, skip = chunk + 1, 0

    def evaluate(self, model) -> dict[str, float]:
        losses = torch.cat(
            [self.window_losses(model, (b[:, :-1], b[:, 1:])) for b in self.val_batches]
        )
        gaps = losses - self._floor
        n = len(losses)
        stats = torch.stack([losses.mean(), losses.std(), gaps.mean(), gaps.std()]).tolist()
        root = math.sqrt(n) if n > 1 else math.inf
        out = {
            "val_loss": stats[0],
            "val_loss_se": stats[1] / root if n > 1 else 0.0,
            "floor": self.floor,
            "gap": stats[2],
            "gap_se": stats[3] / root if n > 1 else 0.0,
            **self.train_loss(),
        }
        if getattr(self, "_probe", None) is not None:
            b = self._probe
            out["probe_loss"] = float(self.window_losses(model, (b[:, :-1], b[:, 1:])).mean())
        return out

    # -- what `bench show` prints ---------------------------------------------------------------

    def reference_losses(self, sample_windows: int = 2048) -> dict[str, float]:
        """The floor, and the validation loss of the best unigram and bigram models fitted on
        ``sample_windows`` fresh training windows (counts, add-one smoothed)."""
        o, src = self.options, self.source
        gen = torch.Generator().manual_seed(stream_seed(TRAIN_STREAM, 0, 0))
        fit = src.generate(sample_windows, o.block_size + 1, gen)
        val = self.validation_windows()
        k, V = o.order, o.vocab
        # the scored targets: positions t >= k, with their previous symbol
        cur, prev = fit[:, k:].reshape(-1), fit[:, k - 1 : -1].reshape(-1)
        uni = torch.bincount(cur, minlength=V).double() + 1
        bi = torch.bincount(prev * V + cur, minlength=V * V).double().view(V, V) + 1
        vcur, vprev = val[:, k:].reshape(-1), val[:, k - 1 : -1].reshape(-1)
        uni_loss = -(uni / uni.sum()).log()[vcur].mean()
        bi_loss = -(bi / bi.sum(dim=1, keepdim=True)).log()[vprev, vcur].mean()
        floor = float(src.nll(val).mean())
        return {"floor": floor, "unigram": float(uni_loss), "bigram": float(bi_loss)}

    def describe_preset(self) -> list[str]:
        o = self.options
        key = (o.vocab, o.order, o.support, o.concentration, o.source_seed, o.backoff)
        key += (o.eval_batches, o.batch_size, o.block_size)
        if key not in _REFERENCES:  # presets that share the language and windows share these
            _REFERENCES[key] = self.reference_losses()
        ref = _REFERENCES[key]
        return [
            f"  losses on the validation windows: floor {ref['floor']:.4f} (Bayes-optimal), "
            f"bigram {ref['bigram']:.4f}, unigram {ref['unigram']:.4f} nats"
        ]
