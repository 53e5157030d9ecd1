"""Where an environment runs: a command runner and a filesystem, on this machine or over SSH.

The docker runtime, the release ledger, the deploy lock and the audit log only talk to a Host, so that
the same code drives a local engine and a remote one (pyinfra's connectors: run, put, get)."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath
from typing import Protocol

from mfe_deploy.errors import MfeError
from mfe_deploy.exec.runner import Runner


class Files(Protocol):
    def read_text(self, path: PurePath) -> str | None:
        """None when the file does not exist."""
        ...

    def mode(self, path: PurePath) -> int | None: ...

    def write_atomic(self, path: PurePath, data: str | bytes, mode: int) -> None:
        """Created with its final mode, then renamed into place: readers see the old file or the new one."""
        ...

    def append_line(self, path: PurePath, line: str) -> None: ...

    def create_exclusive(self, path: PurePath, text: str) -> bool:
        """False when the file exists already (the lock primitive)."""
        ...

    def unlink(self, path: PurePath) -> None: ...

    def makedirs(self, path: PurePath, mode: int = 0o700) -> None: ...


def write_atomic(path: Path, data: str | bytes, mode: int) -> None:
    """Temp file in the same directory, created with its final mode, fsynced, then renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700 if mode & 0o077 == 0 else 0o755)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def own_folder(path: Path) -> None:
    """Creates `path` (0700), or takes an existing one only when it is a real folder (not a link to one) of
    this user's that nobody else can write. For names others can guess, in a shared folder such as /tmp:
    checked with lstat, so a link planted there is refused instead of followed (and then chmod-ed)."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    found = os.lstat(path)
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.getuid() or found.st_mode & 0o022:
        why = "a link" if stat.S_ISLNK(found.st_mode) else "not a folder of this user's that only it can write"
        raise MfeError(f"{path} is {why}: refused (remove it; it may have been planted by another user)")


class LocalFiles:
    def read_text(self, path: PurePath) -> str | None:
        try:
            return Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def mode(self, path: PurePath) -> int | None:
        try:
            return Path(path).stat().st_mode & 0o777
        except FileNotFoundError:
            return None

    def write_atomic(self, path: PurePath, data: str | bytes, mode: int) -> None:
        write_atomic(Path(path), data, mode)

    def append_line(self, path: PurePath, line: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        with os.fdopen(fd, "a") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def create_exclusive(self, path: PurePath, text: str) -> bool:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        return True

    def unlink(self, path: PurePath) -> None:
        Path(path).unlink(missing_ok=True)

    def makedirs(self, path: PurePath, mode: int = 0o700) -> None:
        Path(path).mkdir(parents=True, exist_ok=True, mode=mode)


# The files of an environment's state folder (Host.state), named here and nowhere else.
RELEASES = "releases.jsonl"  # the release ledger (state.ledger)
AUDIT = "audit.jsonl"  # the audit log (state.audit)
DEPLOY_LOCK = "deploy.lock"  # who deploys now (state.lock)
MIGRATED = "migrated"  # the key of the images and database that last migrated (docker, swarm)
JOBS = "jobs"  # scheduled jobs' locks and history
WATCH = "watch.json"  # what `watch` has seen and said


@dataclass(frozen=True)
class Host:
    name: str  # "local", or user@host:port
    runner: Runner
    files: Files
    root: PurePath  # the environment's folder there: the bundle, and state/ beside it
    remote: bool = False

    @property
    def state(self) -> PurePath:
        return self.root / "state"


def local(project_dir: Path, env: str) -> Host:
    from mfe_deploy.exec.process import LocalProcess

    return Host("local", LocalProcess(), LocalFiles(), (project_dir / ".mfe" / env).resolve())


def remote_root(home: str, remote_dir: str) -> PurePosixPath:
    return PurePosixPath(remote_dir) if remote_dir.startswith("/") else PurePosixPath(home) / remote_dir
