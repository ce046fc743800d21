"""Errors that the CLI turns into one red line and a non-zero exit code."""

from __future__ import annotations

import errno

#: errors of a write that only room mends: a full disk, a quota, a file-size limit
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class BenchError(Exception):
    """A problem with the user's input or environment; the message says what and how to fix it.

    ``details``: lines printed before the error line, one per item (say, each unreadable file).
    """

    details: tuple[str, ...] = ()
    #: the message without the suite key path that locates it (``bench_cli.plan.located``)
    unlocated: str | None = None


class Terminated(SystemExit):
    """SIGTERM (kill, timeout, a scheduler), raised where Python is so that cleanup runs. Unlike
    a ``sys.exit`` in a task's or an optimizer's code, which fails only its run, it stops the
    command."""


def describe(exc: BaseException) -> str:
    """An exception in one line, as a run's error or a plug-in's failure shows it; a
    ``SystemExit`` says that the task's, optimizer's or plug-in's code called ``sys.exit``."""
    if isinstance(exc, SystemExit):
        return f"SystemExit: {exc.code} (the task's, optimizer's or plug-in's code called sys.exit)"
    return f"{type(exc).__name__}: {exc}"


class UnknownNameError(BenchError, KeyError):
    """An optimizer or task name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DataError(BenchError):
    """A data file that is missing, unreadable or corrupt."""


class ConfigError(BenchError, ValueError):
    """A configuration value (hyperparameter, task option, run setting) that is invalid."""


class DamagedRecordsError(BenchError):
    """Record files that cannot be read; ``details`` names each one and why."""

    def __init__(self, message: str, details: list[str]):
        super().__init__(message)
        self.details = tuple(details)


def cannot_write(exc: OSError, what: str) -> BenchError:
    """One line for a write that failed: what, why, and what to do."""
    if exc.errno == errno.EFBIG:
        fix = "raise the limit on file sizes (ulimit -f)"
    else:
        fix = "free some space" if exc.errno in DISK_FULL else "check that it can be written"
    return BenchError(
        f"cannot write {what} ({exc.strerror or exc}); {fix} and rerun the command to resume"
    )


def clip(text: object, limit: int = 80) -> str:
    """``text`` (its ``str``) cut to ``limit`` characters, for quoting user values in messages."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def ended(code: int | None) -> str:
    """How a process ended, for messages: from its exit code, negative for the signal that
    killed it (as ``subprocess`` and ``multiprocessing`` report it)."""
    if code is not None and code < 0:
        import signal

        return f"killed by signal {signal.Signals(-code).name}"
    return f"exit code {code}"
