"""Reading language data: llm.c-format token shards, and text files as characters or bytes.

A shard is llm.c's / modded-nanogpt's format: a header of 256 little-endian int32 (magic
20240520, version 1, token count, the rest unused), then the tokens as little-endian uint16.
``bench data shards`` writes them; ``TokenSplit`` serves windows of a split to the tasks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from bench_cli.errors import DataError
from bench_cli.tasks.data import TINY_SHAKESPEARE, check_data_path, locate

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
SHARD_HEADER_BYTES = 256 * 4
#: GPT-2's 50,257 tokens padded to a multiple of 64: the vocabulary of token shards by default
GPT2_VOCAB = 50304


def read_shard(path: Path) -> np.ndarray:
    """The tokens of one ``.bin`` shard, memory-mapped (uint16), after checking its header."""
    size = path.stat().st_size
    if size < SHARD_HEADER_BYTES:
        raise DataError(
            f"{path} is not a token shard: {size} bytes, shorter than the 1024-byte header"
        )
    magic, version, n_tokens = np.fromfile(path, dtype="<i4", count=3).tolist()
    if magic != SHARD_MAGIC:
        raise DataError(
            f"{path} is not a token shard: magic number {magic}, expected {SHARD_MAGIC} "
            "(llm.c / modded-nanogpt .bin format)"
        )
    if version != SHARD_VERSION:
        raise DataError(f"{path}: shard version {version} is not supported (expected 1)")
    expected = SHARD_HEADER_BYTES + 2 * n_tokens
    if size != expected:
        what = "truncated" if size < expected else "longer than its header says"
        raise DataError(
            f"{path} is {what}: the header says {n_tokens} tokens ({expected} bytes), "
            f"the file has {size} bytes"
        )
    return np.memmap(path, dtype="<u2", mode="r", offset=SHARD_HEADER_BYTES, shape=(n_tokens,))


def write_shard(path: Path, tokens: np.ndarray) -> None:
    """Write ``tokens`` (ids below 65,536) as one ``.bin`` shard."""
    header = np.zeros(256, dtype="<i4")
    header[:3] = (SHARD_MAGIC, SHARD_VERSION, len(tokens))
    with open(path, "wb") as fh:
        fh.write(header.tobytes())
        fh.write(np.asarray(tokens, dtype="<u2").tobytes())


def shard_files(path: Path) -> tuple[list[Path], list[Path]]:
    """(training, validation) shards of a folder or of a single ``.bin`` file."""
    if path.is_file():
        return [path], []
    files = sorted(path.glob("*.bin"))
    val = [f for f in files if "val" in f.name]
    train = [f for f in files if "train" in f.name] or [f for f in files if f not in val]
    if not train:
        raise DataError(f"{path} holds no training shards (*.bin besides *val*.bin)")
    return train, val


def manifest_vocab(path: Path) -> int | None:
    """The vocabulary size that ``bench data shards`` recorded beside the shards, if any."""
    manifest = (path if path.is_dir() else path.parent) / "manifest.json"
    try:
        return int(json.loads(manifest.read_text())["vocab_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_shards(path: Path) -> bool:
    return path.suffix == ".bin" or (path.is_dir() and any(path.glob("*.bin")))


def encode_texts(raws: list[tuple[bytes, str]], tokenizer: str) -> tuple[list[torch.Tensor], int]:
    """Token ids (int64) of each (raw, source) and the vocabulary: the sorted distinct characters
    of all texts together, or the 256 byte values."""
    if tokenizer == "bytes":
        return [torch.frombuffer(bytearray(r), dtype=torch.uint8).long() for r, _ in raws], 256
    texts = []
    for raw, source in raws:
        try:
            texts.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{source} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                "use --set tokenizer=bytes for arbitrary bytes"
            ) from exc
    chars = sorted(set().union(*texts))
    lookup = {ch: i for i, ch in enumerate(chars)}
    return [torch.tensor([lookup[ch] for ch in t], dtype=torch.long) for t in texts], len(chars)


def encode_text(raw: bytes, tokenizer: str, source: str) -> tuple[torch.Tensor, int]:
    """Token ids (int64) and vocabulary size of one text: sorted distinct characters, or bytes."""
    (tokens,), vocab = encode_texts([(raw, source)], tokenizer)
    return tokens, vocab


def split_tail(parts: list, n_val: int) -> tuple[list, list]:
    """Split a sequence of 1-D arrays into all but the last ``n_val`` tokens, and those."""
    train, val = list(parts), []
    while n_val > 0 and train:
        last = train.pop()
        take = min(n_val, len(last))
        val.insert(0, last[len(last) - take :])
        if take < len(last):
            train.append(last[: len(last) - take])
        n_val -= take
    return train, val


class TokenSplit:
    """One split's tokens in windows of ``window`` tokens that never cross from part to part.

    Text lives on the device as one int64 tensor; shards stay memory-mapped on the host and a
    batch is gathered there and copied over. Window starts are numbered across the parts.
    """

    def __init__(self, parts: list, window: int, device: torch.device, vocab_size: int, name: str):
        # len - window starts, as before: the very last window of a part is never drawn
        counts = [max(0, len(p) - window) for p in parts]
        self.parts, self.window, self.device, self.name = parts, window, device, name
        self.on_device = bool(parts) and torch.is_tensor(parts[0])
        self.vocab_size = vocab_size
        self.n_starts = sum(counts)
        self._ends = np.cumsum(counts)
        self._counts = np.asarray(counts)
        self._arange = torch.arange(window, device=device)

    def windows(self, starts: torch.Tensor) -> torch.Tensor:
        """(len(starts), window) int64 token ids on the device."""
        if self.on_device:
            data = self.parts[0]
            return data[starts.to(self.device, non_blocking=True)[:, None] + self._arange]
        g = starts.numpy()
        part = np.searchsorted(self._ends, g, side="right")
        local = g - (self._ends[part] - self._counts[part])
        rows = np.stack([self.parts[p][i : i + self.window] for p, i in zip(part, local)])
        top = int(rows.max())
        if top >= self.vocab_size:
            raise DataError(
                f"token id {top} in the {self.name} shards is outside the vocabulary of "
                f"{self.vocab_size}; pass --set vocab_size=N with N > {top}"
            )
        out = torch.from_numpy(rows.astype(np.int64))
        if self.device.type == "cuda":
            return out.pin_memory().to(self.device, non_blocking=True)
        return out.to(self.device)

    def batch(self, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        chunk = self.windows(starts)
        return chunk[:, :-1], chunk[:, 1:]


def _path(text: str, option: str) -> Path:
    return check_data_path(Path(text).expanduser(), option, folder_ok=True)


def load_splits(
    data: str | None,
    val_data: str | None,
    tokenizer: str,
    vocab_size: int | None,
    val_fraction: float,
) -> tuple[list, list, int]:
    """(training parts, validation parts, vocabulary size): shards (their vocabulary from
    ``vocab_size``, else their manifest, else GPT-2's), or a text file split at ``val_fraction``
    (Tiny Shakespeare when ``data`` is None)."""
    path = _path(data, "--data") if data else None
    val_path = _path(val_data, "--set val_data") if val_data else None
    if path is not None and is_shards(path):
        train_files, val_files = shard_files(path)
        if val_path is not None:
            if not is_shards(val_path):
                raise DataError(f"{val_path}: token shards train with token shards (.bin) only")
            val_files = shard_files(val_path)[0]
        train = [read_shard(f) for f in train_files]
        val = [read_shard(f) for f in val_files]
        if not val:
            train, val = split_tail(train, int(sum(map(len, train)) * val_fraction))
        return train, val, vocab_size or manifest_vocab(path) or GPT2_VOCAB
    if path is not None and path.is_dir() and not (path / TINY_SHAKESPEARE.name).is_file():
        raise DataError(f"{path} holds no .bin token shards and no {TINY_SHAKESPEARE.name}")
    text = locate(TINY_SHAKESPEARE, data)
    sources = [text] if val_path is None else [text, val_path]
    if val_path is not None and (val_path.is_dir() or is_shards(val_path)):
        raise DataError(f"{val_path}: a text file trains with a text validation file only")
    tokens, vocab = encode_texts([(p.read_bytes(), str(p)) for p in sources], tokenizer)
    if vocab_size is not None:
        if vocab_size < vocab:
            raise DataError(f"{text} has {vocab} distinct tokens, more than vocab_size")
        vocab = vocab_size
    if val_path is not None:
        return tokens[:1], tokens[1:], vocab
    (data,) = tokens
    cut = len(data) - int(len(data) * val_fraction)
    return [data[:cut]], [data[cut:]], vocab
