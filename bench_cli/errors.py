"""Errors that the CLI turns into one red line and a non-zero exit code."""

from __future__ import annotations


class BenchError(Exception):
    """A problem with the user's input or environment; the message says what and how to fix it."""


class UnknownNameError(BenchError, KeyError):
    """An optimizer or task name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DataError(BenchError):
    """A data file that is missing, unreadable or corrupt."""


class ConfigError(BenchError, ValueError):
    """A configuration value (hyperparameter, task option, run setting) that is invalid."""
