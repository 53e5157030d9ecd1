"""The remote host's filesystem over SFTP, behind the same Files interface as this machine's.

Atomic writes are a temporary file (its mode set before any byte is written) renamed with OpenSSH's
posix-rename extension; the lock is an exclusive create (O_EXCL through SFTP's EXCL flag)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
import threading
from pathlib import Path, PurePath, PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import paramiko

    from mfe_deploy.console import Task

BLOCK = 1 << 20


def _missing(exc: OSError) -> bool:
    return isinstance(exc, FileNotFoundError) or exc.errno == errno.ENOENT


class SftpFiles:
    def __init__(self, sftp: paramiko.SFTPClient) -> None:
        self.sftp = sftp
        self._lock = threading.Lock()  # one SFTP channel: requests from worker threads take turns

    def _p(self, path: PurePath) -> str:
        return str(PurePosixPath(path))

    def read_text(self, path: PurePath) -> str | None:
        data = self.read_bytes(path)
        return None if data is None else data.decode("utf-8")

    def read_bytes(self, path: PurePath) -> bytes | None:
        with self._lock:
            try:
                with self.sftp.open(self._p(path), "rb") as handle:
                    handle.prefetch()
                    return bytes(handle.read())
            except OSError as exc:
                if _missing(exc):
                    return None
                raise

    def mode(self, path: PurePath) -> int | None:
        with self._lock:
            try:
                found = self.sftp.stat(self._p(path)).st_mode
            except OSError as exc:
                if _missing(exc):
                    return None
                raise
        return None if found is None else stat.S_IMODE(found)

    def exists(self, path: PurePath) -> bool:
        return self.mode(path) is not None

    def makedirs(self, path: PurePath, mode: int = 0o700) -> None:
        with self._lock:
            self._makedirs(PurePosixPath(path), mode)

    def _makedirs(self, path: PurePosixPath, mode: int) -> None:
        try:
            self.sftp.stat(str(path))
            return
        except OSError as exc:
            if not _missing(exc):
                raise
        if path.parent != path:
            self._makedirs(path.parent, mode)
        self.sftp.mkdir(str(path), mode)
        self.sftp.chmod(str(path), mode)  # mkdir's mode passes through the server's umask

    def write_atomic(self, path: PurePath, data: str | bytes, mode: int) -> None:
        target = PurePosixPath(path)
        self.makedirs(target.parent, 0o700 if mode & 0o077 == 0 else 0o755)
        tmp = target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp"
        payload = data.encode() if isinstance(data, str) else data
        with self._lock:
            try:
                with self.sftp.open(str(tmp), "wbx") as handle:
                    handle.chmod(mode)  # before the first byte: a secret is never readable by others
                    handle.set_pipelined(True)
                    handle.write(payload)
                self.sftp.posix_rename(str(tmp), str(target))
            except BaseException:
                with contextlib.suppress(OSError):
                    self.sftp.remove(str(tmp))
                raise

    def append_line(self, path: PurePath, line: str) -> None:
        target = PurePosixPath(path)
        self.makedirs(target.parent, 0o700)
        with self._lock, self.sftp.open(str(target), "ab") as handle:
            handle.write(line.encode())

    def create_exclusive(self, path: PurePath, text: str) -> bool:
        target = PurePosixPath(path)
        self.makedirs(target.parent, 0o700)
        with self._lock:
            try:
                handle = self.sftp.open(str(target), "wbx")
            except OSError:
                # SFTP v3 reports EEXIST as a generic failure: tell it apart by looking.
                try:
                    self.sftp.stat(str(target))
                except OSError:
                    raise
                return False
            with handle:
                handle.write(text.encode())
        return True

    def unlink(self, path: PurePath) -> None:
        with self._lock:
            try:
                self.sftp.remove(self._p(path))
            except OSError as exc:
                if not _missing(exc):
                    raise

    def rename(self, old: PurePath, new: PurePath) -> None:
        with self._lock:
            self.sftp.posix_rename(self._p(old), self._p(new))

    def put(self, local: Path, remote: PurePath, mode: int, task: Task | None = None) -> None:
        """Stream a local file to the host; the remote file gets `mode` before its first byte."""
        with self._lock, local.open("rb") as source, self.sftp.open(self._p(remote), "wbx") as out:
            out.chmod(mode)
            out.set_pipelined(True)
            while chunk := source.read(BLOCK):
                out.write(chunk)
                if task is not None:
                    task.advance(len(chunk))

    def get(self, remote: PurePath, local: Path, task: Task | None = None) -> tuple[str, int]:
        """Stream a remote file into a new local file (0600, fsynced): its SHA-256 and size as received."""
        digest = hashlib.sha256()
        size = 0
        fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with self._lock, self.sftp.open(self._p(remote), "rb") as source, os.fdopen(fd, "wb") as out:
            source.prefetch()
            while chunk := source.read(BLOCK):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
                if task is not None:
                    task.advance(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        return digest.hexdigest(), size

    def listdir(self, path: PurePath) -> list[str]:
        with self._lock:
            try:
                return sorted(self.sftp.listdir(self._p(path)))
            except OSError as exc:
                if _missing(exc):
                    return []
                raise
