"""bench: compare deep-learning optimizers fairly and fast."""

__version__ = "0.1.0"
