"""A stopping service's first seconds. On SIGTERM a service keeps its listener open for SECONDS and
answers every request with `Connection: close`: a pooled connection a client (the gateway) uses again
is closed by that client after a whole answer, and one it does not use has been idle longer than the
gateway keeps an idle connection (upstream.IDLE_SECONDS) by the time the service closes it. Closing an
idle keep-alive connection at once, as uvicorn does, races a request sent on it at that instant: a POST
the gateway cannot send again. Then uvicorn's shutdown: the listener closes (a refused connection is
retried on another address) and in-flight requests finish within the rest of the stop timeout.

`DRAIN_SECONDS` in the environment sets the length (mfe-deploy renders it: 2 s on one host, the
swarm's `drain` on a Swarm, where the other nodes learn that a task left their DNS answers seconds
later: the listener stays open until they have)."""

from __future__ import annotations

import os
import time

DEFAULT = 2.0
_started: float | None = None
_length = DEFAULT


def length() -> float:
    """DRAIN_SECONDS, read when asked: a service's env file is loaded after this module is imported."""
    try:
        value = float(os.environ.get("DRAIN_SECONDS", DEFAULT))
    except ValueError:
        return DEFAULT
    return value if 0 <= value <= 300 else DEFAULT


def begin() -> None:
    global _started, _length
    if _started is None:
        _started, _length = time.monotonic(), length()


def active() -> bool:
    return _started is not None


def over() -> bool:
    return _started is not None and time.monotonic() - _started >= _length
