"""The backups of a remote environment live on its host, in `<remote dir>/backups/<id>/`, with the same
layout, manifest and checksums as a local backups folder.

A backup is made by streaming each dump from the remote database over SSH into this machine's backups
folder (hashed, and encrypted when configured, before it is written anywhere: the host never sees an
encryption key), then uploaded to the host into `<id>.partial/`, checked there with `sha256sum`, and
renamed. `--download` keeps the local copy. `download` fetches a remote backup into the local folder,
checking each file's SHA-256 as it arrives; `restore` and `verify` download first when needed."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from mfe_deploy.backups.store import (
    MANIFEST,
    PARTIAL,
    VERIFIED,
    BackupError,
    Entry,
    Manifest,
    Store,
    pick,
    read_entry,
    receive,
)
from mfe_deploy.console import Task
from mfe_deploy.exec.command import Command
from mfe_deploy.exec.host import Host
from mfe_deploy.exec.names import child, is_bare
from mfe_deploy.remote.sftp import SftpFiles


class RemoteBackups:
    def __init__(self, host: Host) -> None:
        if not isinstance(host.files, SftpFiles):
            raise TypeError("RemoteBackups needs a remote host")
        self.host = host
        self.files: SftpFiles = host.files
        self.root = PurePosixPath(host.root) / "backups"

    def where(self, backup_id: str) -> str:
        return f"{self.host.name}:{self.root / backup_id}"

    def scan(self) -> list[Entry]:
        """As Store.scan, read over SFTP (an Entry's path is the remote folder). The host is not trusted
        with names: a listed name that is not a plain file name is not a backup of ours."""
        names = [n for n in self.files.listdir(self.root) if not n.startswith(".") and is_bare(n)]
        return [read_entry(self.files, self.root, name) for name in names]

    def get(self, backup_id: str | None) -> Entry:
        return pick([e for e in self.scan() if e.complete], backup_id, f"{self.host.name}:{self.root}")

    # --- up ----------------------------------------------------------------------------------------------
    def upload(self, entry: Entry, task: Task | None = None) -> None:
        """Copy a complete local backup to the host: into `<id>.partial/`, each file 0600, checked with
        sha256sum on the host, then renamed. An interrupted upload leaves only the partial folder."""
        manifest = entry.manifest
        if manifest is None:
            raise BackupError(f"backup {entry.id} is not complete: not uploaded")
        partial = self.root / (entry.id + PARTIAL)
        self.files.makedirs(self.root, 0o700)
        self._remove_tree(partial)
        self.files.makedirs(partial, 0o700)
        names = [*manifest.files, MANIFEST, *([VERIFIED] if (entry.path / VERIFIED).exists() else [])]
        try:
            for name in names:
                self.files.put(entry.path / name, partial / name, 0o600, task)
            self._check_remote(partial, manifest)
        except BaseException:
            self._remove_tree(partial)
            raise
        self.files.rename(partial, self.root / entry.id)

    def _check_remote(self, folder: PurePosixPath, manifest: Manifest) -> None:
        names = sorted(manifest.files)
        done = self.host.runner.run(Command(("sha256sum", "--", *names), cwd=folder), timeout=3600)
        found = {}
        for line in done.stdout.splitlines():
            digest, _, name = line.partition("  ")
            found[name] = digest
        wrong = [n for n in names if found.get(n) != manifest.files[n].sha256]
        if done.returncode != 0 or wrong:
            why = ", ".join(wrong) or (done.stderr.strip().splitlines() or ["sha256sum failed"])[-1]
            raise BackupError(
                f"the copy of {manifest.id} on {self.host.name} does not match the manifest ({why}): removed there; "
                "the local copy is kept"
            )

    def mark_verified(self, backup_id: str, record: dict[str, object]) -> None:
        text = json.dumps(record, indent=2, sort_keys=True) + "\n"
        self.files.write_atomic(self.root / backup_id / VERIFIED, text, 0o600)

    # --- down --------------------------------------------------------------------------------------------
    def download(self, remote: Entry, store: Store, task: Task | None = None) -> Entry:
        """Fetch a complete remote backup (from `scan`/`get`) into the local folder; every file's SHA-256
        and size are checked against the manifest as it arrives, and a mismatch keeps nothing."""
        manifest = remote.manifest
        assert manifest is not None
        folder = child(self.root, remote.id, "a backup id")

        def fetch(name: str, target: Path) -> tuple[str, int]:
            return self.files.get(child(folder, name, "a file"), target, task)

        return receive(store, manifest, self.where(remote.id), fetch, remote.verified)

    def remove(self, entry: Entry) -> None:
        """Renamed away first: a half-removed backup never looks complete."""
        name = entry.id + (PARTIAL if not entry.complete and entry.problem == "interrupted" else "")
        doomed = self.root / f".{name}.removing"
        self.files.rename(self.root / name, doomed)
        self._remove_tree(doomed)

    def leftovers(self) -> None:
        """Remove what a killed prune was removing."""
        for name in self.files.listdir(self.root):
            if name.startswith(".") and name.endswith(".removing"):
                self._remove_tree(self.root / name)

    def _remove_tree(self, folder: PurePosixPath) -> None:
        if folder.parent != self.root or not folder.name:
            raise ValueError(f"refusing to remove {folder}")
        self.host.runner.run(Command(("rm", "-rf", "--", str(folder))), timeout=600)
