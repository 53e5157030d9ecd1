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
from pathlib import PurePath

from mfe_deploy.errors import MfeError
from mfe_deploy.exec.host import Files


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


def read(files: Files, path: PurePath) -> Holder | None:
    text = files.read_text(path)
    if text is None:
        return None
    try:
        return Holder(**json.loads(text))
    except (ValueError, TypeError):
        return Holder("?", "?", -1, "unreadable lock file", "?")


@contextmanager
def held(
    files: Files, path: PurePath, command: str, *, wait: float = 0, force_unlock: bool = False
) -> Iterator[Holder]:
    """`files`: the host the environment runs on, so that operators on two machines see one lock."""
    me = Holder.me(command)
    deadline = time.monotonic() + wait
    while not files.create_exclusive(path, json.dumps(asdict(me))):
        current = read(files, path)
        if current is not None and current.alive() is False:
            if force_unlock:
                files.unlink(path)
                continue
            raise LockHeld(
                f"stale deploy lock: {current.describe()} (that process is gone); "
                "check what it left half-done, then run again with --force-unlock"
            )
        if time.monotonic() >= deadline:
            who = current.describe() if current else "someone (the lock was just released; retry)"
            raise LockHeld(f"the environment is locked by {who}; retry later or use --lock-wait SECONDS")
        time.sleep(0.2)
    try:
        yield me
    finally:
        if read(files, path) == me:
            files.unlink(path)
