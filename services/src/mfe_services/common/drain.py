"""A stopping service's first seconds. On SIGTERM a service keeps its listener open for SECONDS and
answers every request with `Connection: close`: a pooled connection a client (the gateway) uses again
is closed by that client after a whole answer, and one it does not use has been idle longer than the
gateway keeps an idle connection (upstream.IDLE_SECONDS) by the time the service closes it. Closing an
idle keep-alive connection at once, as uvicorn does, races a request sent on it at that instant: a POST
the gateway cannot send again. Then uvicorn's shutdown: the listener closes (a refused connection is
retried on another address) and in-flight requests finish within the rest of the stop timeout."""

from __future__ import annotations

import time

SECONDS = 2.0
_started: float | None = None


def begin() -> None:
    global _started
    if _started is None:
        _started = time.monotonic()


def active() -> bool:
    return _started is not None


def over() -> bool:
    return _started is not None and time.monotonic() - _started >= SECONDS
