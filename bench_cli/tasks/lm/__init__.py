"""Language models: GPTs on text and token shards (lm-small, lm-medium, lm-gpt2) and on a
synthetic Markov language with a known loss floor (lm-markov), with their data readers."""

from bench_cli.tasks.lm.markov import LMMarkov, MarkovSource
from bench_cli.tasks.lm.text import LMGPT2, CharLM, LMMedium, LMOptions, LMSmall
from bench_cli.tasks.lm.tokens import (
    GPT2_VOCAB,
    SHARD_HEADER_BYTES,
    SHARD_MAGIC,
    SHARD_VERSION,
    TokenSplit,
    encode_text,
    encode_texts,
    is_shards,
    load_splits,
    read_shard,
    shard_files,
    write_shard,
)

__all__ = [
    "GPT2_VOCAB",
    "SHARD_HEADER_BYTES",
    "SHARD_MAGIC",
    "SHARD_VERSION",
    "CharLM",
    "LMGPT2",
    "LMMarkov",
    "LMMedium",
    "LMOptions",
    "LMSmall",
    "MarkovSource",
    "TokenSplit",
    "encode_text",
    "encode_texts",
    "is_shards",
    "load_splits",
    "read_shard",
    "shard_files",
    "write_shard",
]
