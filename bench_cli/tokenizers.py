"""The tokenizers of ``bench data shards``: GPT-2's BPE (through tiktoken), characters, bytes.

Each turns one file's bytes into an array of token ids; the shards store them as uint16.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench_cli.errors import DataError, clip, describe

TOKENIZERS = ("gpt2", "char", "bytes")
#: tiktoken's name for GPT-2's BPE: the same ranks, pattern and <|endoftext|> as its "gpt2"
GPT2_ENCODING = "r50k_base"
#: where tiktoken fetches those ranks, and their sha256 (a local copy must match it)
GPT2_RANKS_URL = f"https://openaipublic.blob.core.windows.net/encodings/{GPT2_ENCODING}.tiktoken"
GPT2_RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"


@dataclass
class Tokenizer:
    name: str
    vocab_size: int
    encode: Callable[[bytes, str], np.ndarray]
    info: dict = field(default_factory=dict)


def decode_text(raw: bytes, source: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{source} is not UTF-8 text ({exc.reason} at byte {exc.start}); use --tokenizer "
            "bytes, leave the file out, or pass --skip-undecodable"
        ) from exc


def _gpt2_encoding(bpe_ranks: Path | None):
    """tiktoken's GPT-2 encoding: its ranks fetched (then cached) by tiktoken, or read from
    ``bpe_ranks``, a local copy of them checked by its sha256."""
    try:
        import tiktoken
    except ImportError as exc:
        raise DataError("--tokenizer gpt2 needs tiktoken: pip install 'bench-cli[gpt2]'") from exc
    if bpe_ranks is None:
        try:
            return tiktoken.get_encoding(GPT2_ENCODING)
        except Exception as exc:  # tiktoken fetches the ranks once, then reads its cache
            raise DataError(
                f"tiktoken could not load GPT-2's BPE ({GPT2_ENCODING}: {clip(describe(exc))}); "
                f"offline, download {GPT2_RANKS_URL} elsewhere and pass --bpe-ranks FILE"
            ) from exc
    from tiktoken_ext.openai_public import ENDOFTEXT, r50k_pat_str

    try:
        raw = Path(bpe_ranks).read_bytes()
    except OSError as exc:
        raise DataError(
            f"--bpe-ranks {clip(str(bpe_ranks))!r}: cannot read it ({exc.strerror or exc}); "
            f"pass a local copy of {GPT2_RANKS_URL}"
        ) from exc
    if (digest := hashlib.sha256(raw).hexdigest()) != GPT2_RANKS_SHA256:
        raise DataError(
            f"--bpe-ranks {clip(str(bpe_ranks))!r} is not GPT-2's BPE ranks (sha256 "
            f"{digest[:12]}..., not {GPT2_RANKS_SHA256[:12]}...); pass a copy of {GPT2_RANKS_URL}"
        )
    # the file's format: one "base64(token bytes) rank" per line
    ranks = {base64.b64decode(tok): int(rank) for tok, rank in map(bytes.split, raw.splitlines())}
    return tiktoken.Encoding(
        GPT2_ENCODING,
        pat_str=r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: len(ranks)},
        explicit_n_vocab=len(ranks) + 1,
    )


def make_tokenizer(
    name: str,
    files: list[Path],
    chars: list[str] | None = None,
    skip_undecodable: bool = False,
    bpe_ranks: Path | None = None,
) -> Tokenizer:
    """The tokenizer ``name``; ``char`` reads every file once for its vocabulary (unless given),
    leaving out files that are not UTF-8 when ``skip_undecodable``. ``gpt2`` reads its ranks from
    ``bpe_ranks`` when given (machines offline), else through tiktoken's download."""
    if bpe_ranks is not None and name != "gpt2":
        raise DataError(f"--bpe-ranks is GPT-2's BPE, for --tokenizer gpt2, not {name!r}")
    if name == "bytes":
        return Tokenizer("bytes", 256, lambda raw, src: np.frombuffer(raw, dtype=np.uint8))
    if name == "gpt2":
        enc = _gpt2_encoding(bpe_ranks)
        eot = enc.eot_token

        def encode(raw: bytes, src: str) -> np.ndarray:
            # encode_ordinary's tokens (special tokens' text is plain text, as tiktoken 0.11 and
            # later treat it here), straight into an array: no Python int per token, so threads
            # scale (benchmarks/shards_jobs.py)
            tokens = enc.encode_to_numpy(decode_text(raw, src), disallowed_special=())
            return np.concatenate((np.array([eot], dtype=np.int64), tokens.astype(np.int64)))

        return Tokenizer("gpt2", enc.n_vocab, encode, {"eot": eot, "encoding": GPT2_ENCODING})
    if name != "char":
        raise DataError(f"unknown tokenizer {name!r}; choose one of {', '.join(TOKENIZERS)}")
    if chars is None:
        seen: set[str] = set()
        for f in files:
            try:
                seen.update(decode_text(f.read_bytes(), str(f)))
            except DataError:
                if not skip_undecodable:
                    raise
        chars = sorted(seen)
    if len(chars) > 65536:
        raise DataError(
            f"the files hold {len(chars)} distinct characters, more than a uint16 shard can "
            "store (65,536); use --tokenizer bytes or gpt2"
        )
    lookup = {ch: i for i, ch in enumerate(chars)}

    def encode_chars(raw: bytes, src: str) -> np.ndarray:
        return np.fromiter((lookup[c] for c in decode_text(raw, src)), dtype=np.int64)

    return Tokenizer("char", len(chars), encode_chars, {"chars": "".join(chars)})
