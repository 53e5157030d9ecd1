"""The audit log: one JSON line per action (who, what, versions, duration, result) per environment."""

from __future__ import annotations

import getpass
import os
import socket
import time
import uuid
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
    """Yields a dict the caller may enrich (versions...). A `started` line is written first, so that an
    action killed midway is still in the log (history shows it as interrupted); the final line is written
    whatever the outcome, then handed to `done` (notifications)."""
    record: dict[str, Any] = {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "who": f"{getpass.getuser()}@{socket.gethostname()}",
        "action": action,
        "env": env,
        **details,
        "op": uuid.uuid4().hex[:12],
    }
    append_line(files, path, {**record, "result": "started", "pid": os.getpid()})
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


def history(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per action: its final line, or its `started` line marked running (its process lives, on
    this machine), interrupted (it does not) or unfinished (it ran elsewhere)."""
    finished = {line["op"] for line in lines if "op" in line and line.get("result") != "started"}
    out = []
    for line in lines:
        if line.get("result") != "started":
            out.append(line)
        elif line["op"] not in finished:
            here = line.get("who", "").endswith(f"@{socket.gethostname()}")
            state = ("running" if _alive(int(line.get("pid", 0))) else "interrupted") if here else "unfinished"
            out.append({**line, "result": state})
    return out


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
