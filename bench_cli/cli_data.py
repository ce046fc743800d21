"""``bench data``: prepare data for the tasks (thin commands over bench_cli.shards)."""

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from bench_cli import shards
from bench_cli.display import friendly, stderr, stdout
from bench_cli.errors import DataError

data_app = typer.Typer(help="Prepare data for the tasks: token shards from any text.")


@data_app.command("shards")
@friendly
def shards_command(
    src: Annotated[list[Path], typer.Argument(help="Text files, or folders of them.")],
    out: Annotated[Path, typer.Option("--out", help="The folder for the shards.")],
    tokenizer: Annotated[
        str, typer.Option(help="gpt2 (BPE through tiktoken), char or bytes.")
    ] = "gpt2",
    val_fraction: Annotated[
        float, typer.Option(help="Fraction of the files held out for validation.")
    ] = 0.01,
    glob: Annotated[str, typer.Option(help="Which files of a folder to read.")] = "*.txt",
    shard_tokens: Annotated[int, typer.Option(help="Tokens per shard.")] = 100_000_000,
    name: Annotated[
        str, typer.Option(help="Shard file prefix (without train or val: they name the splits).")
    ] = "data",
    skip_undecodable: Annotated[
        bool, typer.Option(help="Skip files that are not UTF-8 (listed in the manifest).")
    ] = False,
    jobs: Annotated[
        int, typer.Option(help="Files tokenized at once (threads); the shards are the same.")
    ] = 1,
    bpe_ranks: Annotated[
        Path | None,
        typer.Option(
            help="GPT-2's BPE ranks (r50k_base.tiktoken) from this file, not downloaded: offline."
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Tokenize text into llm.c-format .bin shards with a manifest; rerun to resume."""
    columns = (
        TextColumn("shards"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
    )
    # off when stderr is no terminal: there, the bar shows nothing and leaves a blank line
    with Progress(
        *columns, console=stderr, disable=quiet or not stderr.is_terminal, transient=True
    ) as bar:
        task = bar.add_task("shards", total=None)
        try:
            manifest = shards.build_shards(
                [str(s) for s in src],
                out,
                tokenizer=tokenizer,
                val_fraction=val_fraction,
                shard_tokens=shard_tokens,
                glob=glob,
                name=name,
                skip_undecodable=skip_undecodable,
                jobs=jobs,
                bpe_ranks=bpe_ranks,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        except PermissionError as exc:  # a folder that exists but cannot be written
            raise DataError(
                f"cannot write {exc.filename!r} ({exc.strerror}); choose another --out"
            ) from exc
    count = {s: sum(1 for x in manifest["shards"] if x["split"] == s) for s in ("train", "val")}
    stdout.print(
        f"{escape(str(out))}: {count['train']} training shards ({manifest['train_tokens']:,} "
        f"tokens), {count['val']} validation shards ({manifest['val_tokens']:,} tokens); "
        f"vocabulary {manifest['vocab_size']:,} ({manifest['settings']['tokenizer']}); "
        f"manifest {shards.MANIFEST}",
        highlight=False,
    )
    if manifest["skipped"]:
        stdout.print(f"skipped {len(manifest['skipped'])} files that are not UTF-8 text")
    task_name = "lm-gpt2" if tokenizer == "gpt2" else "lm-small"
    stdout.print(f"train on them: bench run --task {task_name} --opt adamw --data {out}")
