"""bench: compare deep-learning optimizers fairly and fast."""

__version__ = "0.1.0"

from bench_cli.bytecode import keep_bytecode as _keep_bytecode  # noqa: E402

_keep_bytecode()  # before torch is imported: see bench_cli/bytecode.py
