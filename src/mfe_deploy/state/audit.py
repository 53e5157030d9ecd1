"""The audit log: one JSON line per action (who, what, versions, duration, result) per environment."""

from __future__ import annotations

import getpass
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import PurePath
from typing import Any

from mfe_deploy.exec.host import Files
from mfe_deploy.state.ledger import append_line


@contextmanager
def audited(
    files: Files,
    path: PurePath,
    action: str,
    env: str,
    details: dict[str, Any],
    done: Callable[[dict[str, Any]], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yields a dict the caller may enrich (versions...); the line is written whatever the outcome, then
    handed to `done` (notifications)."""
    record: dict[str, Any] = {
        "time": datetime.now(UTC).isoformat(timespec="seconds"), "who": f"{getpass.getuser()}@{socket.gethostname()}",
        "action": action, "env": env, **details,
    }  # fmt: skip
    started = time.monotonic()
    try:
        yield record
        record["result"] = "ok"
    except BaseException as exc:
        record["result"] = "failed"
        record["error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        record["error_type"] = type(exc).__name__
        raise
    finally:
        record["seconds"] = round(time.monotonic() - started, 2)
        append_line(files, path, record)
        if done is not None:
            done(record)
