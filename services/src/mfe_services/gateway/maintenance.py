"""Maintenance mode, as `mfe-deploy maintenance on` sets it: a JSON file the gateway looks at no more than
once a second (not on every request). While it exists, API routes answer 503 with Retry-After and the
operator's message; /health keeps answering, so that probes and nginx do not take the gateway out."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

RECHECK = 1.0
DEFAULT_RETRY_AFTER = 120


@dataclass(frozen=True)
class Notice:
    body: bytes
    retry_after: bytes


def parse(data: bytes) -> Notice:
    """The file's content; anything unreadable still means maintenance (the operator asked for it)."""
    message, retry = "the service is under maintenance", DEFAULT_RETRY_AFTER
    try:
        given = json.loads(data)
        if isinstance(given, dict):
            message = str(given.get("message") or message)[:500]
            value = given.get("retry_after")
            retry = value if isinstance(value, int) and 0 < value <= 86400 else retry
    except ValueError:
        pass
    return Notice(json.dumps({"error": "maintenance", "message": message}).encode(), str(retry).encode())


class Maintenance:
    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None
        self.checked = float("-inf")
        self.notice: Notice | None = None

    def current(self) -> Notice | None:
        if self.path is None:
            return None
        now = time.monotonic()
        if now - self.checked >= RECHECK:
            self.checked = now
            try:
                self.notice = parse(self.path.read_bytes())
            except FileNotFoundError:
                self.notice = None
            except OSError:
                self.notice = parse(b"")
        return self.notice
