"""Whether a server answers at an address, asked once, before a command writes anything: the
clients of Ray and MLflow would retry an address where nothing answers for minutes."""

from __future__ import annotations

import socket

TIMEOUT = 5.0


def unanswered(host: str, port: int) -> str | None:
    """Why nothing answers at ``host:port`` (a TCP connection, ``TIMEOUT`` seconds at most), or
    None when something does."""
    try:
        socket.create_connection((host.strip("[]"), port), timeout=TIMEOUT).close()
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__
    return None
