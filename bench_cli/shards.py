"""Token shards from any text: ``bench data shards SRC... --out DIR``.

Text files (or folders of them, matched by a glob) are tokenized in sorted order, one document
per file, and written as llm.c-format ``.bin`` shards (the format ``lm-gpt2`` and every LM task
read: ``bench_cli.tasks.lm.tokens``): ``DIR/<name>_train_000000.bin``, ...,
``DIR/<name>_val_000000.bin``, ... Tokenizers: ``gpt2`` (GPT-2's BPE through tiktoken, the
optional extra ``gpt2``; every document starts with ``<|endoftext|>``, 50256, as llm.c's
scripts write it), ``char`` (the sorted distinct characters of all the files) and ``bytes``.

A file goes to validation when the sha256 of its path under the folder named (or of its name),
read as a fraction, is below ``--val-fraction``: the split is fixed per file, wherever the
sources lie and whatever else they hold. With no file in
validation, the tasks hold out the last tenth of the training tokens instead.

``DIR/manifest.json`` records the settings, the sources, the vocabulary, and every shard with its
token count and sha256. It is rewritten after each shard, so an interrupted build resumes where
its last full shard ended when the same command runs again; the finished shards are checked
against their checksums first.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path

import numpy as np

from bench_cli.errors import DataError, clip, describe
from bench_cli.results.store import check_parent_folder, name_problem
from bench_cli.tokenizers import Tokenizer, decode_text, make_tokenizer

MANIFEST = "manifest.json"


def collect_files(
    sources: Iterable[str], glob: str, out: Path | None = None
) -> list[tuple[Path, str]]:
    """(file, key) for files named and files under folders named that match ``glob``, sorted,
    each once. The key (a file's path under the folder named, or its name) decides its split,
    so that the split does not depend on where the sources lie. Files under ``out`` (the shards'
    folder, inside a source folder) are not sources: a rerun would read its own output."""
    found: dict[Path, str] = {}
    outside = out.resolve() if out is not None else None
    for text in sources:
        path = Path(text).expanduser()
        if path.is_file():
            found.setdefault(path, path.name)
        elif path.is_dir():
            try:
                files = sorted(
                    p
                    for p in path.rglob(glob)
                    if p.is_file() and (outside is None or outside not in p.resolve().parents)
                )
            except (ValueError, NotImplementedError) as exc:  # "/x", "a**"
                raise DataError(
                    f"--glob {glob!r} is not a pattern under a folder ({exc}); pass one like "
                    "'*.txt'"
                ) from exc
            if not files:
                raise DataError(f"{path} holds no files matching {glob!r}; set --glob")
            for f in files:
                found.setdefault(f, f.relative_to(path).as_posix())
        else:
            raise DataError(f"{path} does not exist; pass text files or folders of them")
    return sorted(found.items(), key=lambda item: str(item[0]))


def goes_to_val(key: str, fraction: float) -> bool:
    digest = hashlib.sha256(os.fsencode(key)).digest()  # a name's bytes, UTF-8 or not
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write(path: Path, tokens: np.ndarray) -> str:
    """Write one shard through a temporary file; its sha256."""
    from bench_cli.tasks.lm.tokens import write_shard  # the one writer of the format

    tmp = path.with_name(f".{path.name}.part")
    write_shard(tmp, tokens)
    os.replace(tmp, path)
    return sha256_file(path)


class _Split:
    """One split's buffer: segments (document, offset in it, tokens) not yet in a shard."""

    def __init__(self, name: str, state: dict):
        self.name = name
        self.next_doc, self.next_offset = state.get("next", (0, 0))
        self.segments: list[tuple[int, int, np.ndarray]] = []
        self.buffered = 0

    def add(self, doc: int, tokens: np.ndarray) -> None:
        offset = self.next_offset if doc == self.next_doc else 0
        if doc < self.next_doc or offset >= len(tokens):
            return
        self.segments.append((doc, offset, tokens[offset:]))
        self.buffered += len(tokens) - offset

    def take(self, n: int, after_doc: int) -> np.ndarray:
        """The first ``n`` buffered tokens; the rest stay, and ``next`` points past them."""
        out, need = [], n
        while need:
            doc, offset, toks = self.segments[0]
            part = toks[:need]
            out.append(part)
            need -= len(part)
            if len(part) == len(toks):
                self.segments.pop(0)
            else:
                self.segments[0] = (doc, offset + len(part), toks[len(part) :])
        self.buffered -= n
        if self.segments:
            self.next_doc, self.next_offset = self.segments[0][:2]
        else:
            self.next_doc, self.next_offset = after_doc + 1, 0
        return np.concatenate(out)


def build_shards(
    sources: list[str],
    out: Path,
    tokenizer: str = "gpt2",
    val_fraction: float = 0.01,
    shard_tokens: int = 100_000_000,
    glob: str = "*.txt",
    name: str = "data",
    skip_undecodable: bool = False,
    progress: Callable[[int, int], None] | None = None,
    jobs: int = 1,
    bpe_ranks: Path | None = None,
) -> dict:
    """Build (or resume) the shards; returns the manifest. ``progress(done, total)`` is called
    with source bytes after each file. ``jobs`` files are tokenized at once; the shards are the
    same for any number."""
    if jobs < 1:
        raise DataError(f"--jobs must be at least 1, got {jobs}")
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if shard_tokens < 1:
        raise DataError(f"--shard-tokens must be positive, got {shard_tokens}")
    problem = name_problem(name)
    if split := next((w for w in ("train", "val") if w in name.lower()), None):
        problem = f"holds {split!r}, which the loader reads as a split (*train*.bin, *val*.bin)"
    if problem:
        raise DataError(f"--name {clip(repr(name))} {problem}; choose another --name")
    check_parent_folder(out / MANIFEST)  # --out (or a folder above it) is a file
    found = collect_files(sources, glob, out)
    files = [f for f, _ in found]
    settings = {
        "tokenizer": tokenizer,
        "val_fraction": val_fraction,
        "shard_tokens": shard_tokens,
        "glob": glob,
        "name": name,
        "files": [[str(f), f.stat().st_size] for f in files],
    }
    split_of = ["val" if goes_to_val(key, val_fraction) else "train" for _, key in found]
    _check_text(files, [size for _, size in settings["files"]], split_of, val_fraction)
    manifest_path = out / MANIFEST
    manifest = _resume(out, manifest_path, settings)
    if manifest.get("complete"):
        return manifest
    chars = manifest.get("vocabulary", {}).get("chars")
    tok = make_tokenizer(
        tokenizer, files, list(chars) if chars is not None else None, skip_undecodable, bpe_ranks
    )
    if tokenizer == "gpt2" and not skip_undecodable:  # as char's vocabulary pass does:
        for f in files:  # a file that is not text stops the build before a shard is written
            decode_text(f.read_bytes(), str(f))
    manifest.update(
        format="llm.c .bin (magic 20240520, version 1, uint16 tokens)",
        settings=settings,
        vocabulary={"size": tok.vocab_size, **tok.info},
        vocab_size=tok.vocab_size,
        complete=False,
    )
    manifest.setdefault("shards", [])
    manifest.setdefault("skipped", [])
    state = manifest.setdefault("state", {})
    splits = {s: _Split(s, state.get(s, {})) for s in ("train", "val")}
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a read-only folder above it, say
        raise DataError(
            f"cannot create --out {str(out)!r} ({exc.strerror or exc}); choose another --out"
        ) from exc

    def save() -> None:
        for s, sp in splits.items():
            state[s] = {"next": [sp.next_doc, sp.next_offset]}
        tmp = out / f".{MANIFEST}.part"
        tmp.write_text(json.dumps(manifest, indent=1))
        os.replace(tmp, manifest_path)

    def emit(sp: _Split, tokens: np.ndarray) -> None:
        index = sum(1 for s in manifest["shards"] if s["split"] == sp.name)
        path = out / f"{name}_{sp.name}_{index:06d}.bin"
        entry = {"file": path.name, "split": sp.name, "tokens": int(len(tokens))}
        manifest["shards"].append({**entry, "sha256": _write(path, tokens)})
        save()

    total = sum(size for _, size in settings["files"])
    done = 0
    split_of = [splits[s] for s in split_of]
    todo = [
        i
        for i, f in enumerate(files)
        if i >= split_of[i].next_doc and str(f) not in manifest["skipped"]
    ]
    encoded, wanted = _encoded(tok, files, todo, jobs), set(todo)
    for i, f in enumerate(files):
        sp = split_of[i]
        done += settings["files"][i][1]
        if i in wanted:
            tokens = next(encoded)
            if isinstance(tokens, DataError):
                if not skip_undecodable:
                    raise tokens
                manifest["skipped"].append(str(f))
                tokens = np.zeros(0, dtype=np.int64)
            sp.add(i, tokens)
            while sp.buffered >= shard_tokens:
                emit(sp, sp.take(shard_tokens, i))
        if progress:
            progress(done, total)
    for sp in splits.values():
        if sp.buffered:
            emit(sp, sp.take(sp.buffered, len(files) - 1))
    for s in ("train", "val"):
        manifest[f"{s}_tokens"] = sum(x["tokens"] for x in manifest["shards"] if x["split"] == s)
    if not manifest["train_tokens"]:  # _check_text saw text: the files that hold it were skipped
        raise DataError(
            "no training tokens: every training file was skipped as not UTF-8 text; use "
            "--tokenizer bytes or lower --val-fraction"
        )
    manifest["complete"] = True
    save()
    return manifest


def _check_text(
    files: list[Path], sizes: list[int], split_of: list[str], val_fraction: float
) -> None:
    """A ``DataError``, before anything is written, when no file holds text or none of the
    files that hold text goes to training."""
    if not any(sizes):
        names = ", ".join(str(f) for f in files)
        raise DataError(
            f"the input holds no text: {clip(names)} {'is' if len(files) == 1 else 'are'} "
            "empty; pass files that hold text"
        )
    if not any(size for size, s in zip(sizes, split_of) if s == "train"):
        raise DataError(
            f"no training text: every file that holds text goes to validation at --val-fraction "
            f"{val_fraction}; lower --val-fraction"
        )


def _encoded(
    tok: Tokenizer, files: list[Path], todo: list[int], jobs: int
) -> Iterator[np.ndarray | DataError]:
    """The tokens of each file in ``todo`` (or the DataError it raised), in order, ``jobs`` at
    a time in threads: tiktoken's BPE runs without the GIL, so threads scale with the cores. At
    most ``2 * jobs`` files are read ahead."""

    def one(i: int) -> np.ndarray | DataError:
        try:
            return tok.encode(files[i].read_bytes(), str(files[i]))
        except DataError as exc:
            return exc

    if jobs == 1:  # in this thread: handing each file to one worker thread costs ~15%
        yield from map(one, todo)
        return
    pool = ThreadPoolExecutor(jobs)
    try:
        ahead = iter(todo)
        pending = deque(pool.submit(one, i) for i in islice(ahead, 2 * jobs))
        while pending:
            future = pending.popleft()
            following = next(ahead, None)
            if following is not None:
                pending.append(pool.submit(one, following))
            yield future.result()
    finally:  # on an error or Ctrl-C, files not yet started are not tokenized for nothing
        pool.shutdown(wait=False, cancel_futures=True)


def _resume(out: Path, manifest_path: Path, settings: dict) -> dict:
    """The manifest to continue from: empty for a fresh build, else checked against ``settings``
    and its shards against their checksums."""
    if not manifest_path.is_file():
        if out.exists() and any(out.glob("*.bin")):
            raise DataError(f"{out} holds .bin files but no {MANIFEST}; choose an empty --out")
        return {}
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{manifest_path} is damaged ({describe(exc)}); remove {out}") from exc
    entries = manifest.get("shards", []) if isinstance(manifest, dict) else None
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and isinstance(e.get("file"), str) and isinstance(e.get("sha256"), str)
        for e in entries
    ):
        raise DataError(f"{manifest_path} is damaged (not a shards manifest); remove {out}")
    if manifest.get("settings") != settings:
        raise DataError(
            f"{out} holds shards made with other settings or sources; choose another --out or "
            "remove it"
        )
    for shard in manifest.get("shards", []):
        path = out / shard["file"]
        if not path.is_file() or sha256_file(path) != shard["sha256"]:
            raise DataError(f"{path} is missing or does not match its sha256; remove {out}")
    return manifest
