"""The deploy lock of an environment: one holder at a time, the holder named to whoever is refused.

A file created with O_EXCL holds the holder's identity. A holder on this host whose pid is gone is
reported stale, and broken only on request (--force-unlock): a stale lock may mean a deploy died
half-way, which someone should look at.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from mfe_deploy.errors import MfeError


class LockHeld(MfeError):
    exit_code = 3


@dataclass(frozen=True)
class Holder:
    user: str
    host: str
    pid: int
    command: str
    since: str

    @classmethod
    def me(cls, command: str) -> Holder:
        return cls(
            getpass.getuser(),
            socket.gethostname(),
            os.getpid(),
            command,
            datetime.now(UTC).isoformat(timespec="seconds"),
        )

    def alive(self) -> bool | None:
        """None when it cannot be told from here (another host)."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def describe(self) -> str:
        return f"{self.user}@{self.host} pid {self.pid} running `{self.command}` since {self.since}"


def read(path: Path) -> Holder | None:
    try:
        return Holder(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        return Holder("?", "?", -1, "unreadable lock file", "?")


def _try(path: Path, holder: Holder) -> bool:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        json.dump(asdict(holder), handle)
    return True


@contextmanager
def held(path: Path, command: str, *, wait: float = 0, force_unlock: bool = False) -> Iterator[Holder]:
    me = Holder.me(command)
    deadline = time.monotonic() + wait
    while not _try(path, me):
        current = read(path)
        if current is not None and current.alive() is False:
            if force_unlock:
                path.unlink(missing_ok=True)
                continue
            raise LockHeld(f"stale deploy lock: {current.describe()} (that process is gone); "
                           "check what it left half-done, then run again with --force-unlock")  # fmt: skip
        if time.monotonic() >= deadline:
            who = current.describe() if current else "someone (the lock was just released; retry)"
            raise LockHeld(f"the environment is locked by {who}; retry later or use --lock-wait SECONDS")
        time.sleep(0.2)
    try:
        yield me
    finally:
        if read(path) == me:
            path.unlink(missing_ok=True)
