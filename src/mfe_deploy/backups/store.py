"""The backups folder of an environment: one directory per backup, complete only once renamed.

A backup is written into `<id>.partial/`: each file as `<name>.tmp`, fsynced, then renamed; the
manifest last; then the directory is renamed to `<id>` and the parent fsynced. An interrupted backup
is therefore never listed, and its leftovers are removed by the next prune.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

from mfe_deploy.errors import MfeError
from mfe_deploy.exec.host import Files, LocalFiles, write_atomic
from mfe_deploy.exec.names import bare, child, is_bare

if TYPE_CHECKING:
    from mfe_deploy.config.models import Environment

PARTIAL = ".partial"
MANIFEST = "manifest.json"
VERIFIED = "verified.json"
FORMAT = 1


class BackupError(MfeError):
    exit_code = 1


@dataclass(frozen=True)
class FileEntry:
    name: str
    size: int
    sha256: str
    kind: str  # "pg_dump-custom" or "pg_dumpall-globals"
    service: str | None = None


@dataclass(frozen=True)
class DatabaseEntry:
    service: str
    database: str
    schema: str | None  # the shared layout: each service owns a schema of the one database
    tables: dict[str, int]  # "schema.table" -> rows, counted in the snapshot that was dumped


@dataclass(frozen=True)
class Manifest:
    id: str
    env: str
    kind: str  # manual, scheduled, pre-restore, pre-migration
    started_at: str
    finished_at: str
    postgresql: dict[str, str]
    layout: str
    files: dict[str, FileEntry]
    databases: dict[str, DatabaseEntry]
    release: dict[str, Any] | None
    tool: dict[str, str]
    encryption: dict[str, Any] | None = None
    format: int = FORMAT
    mac: str | None = None  # crypt.manifest_mac of this manifest written with no mac (a passphrase's)

    def to_json(self) -> str:
        def plain(value: Any) -> Any:
            if isinstance(value, FileEntry | DatabaseEntry):
                return {k: plain(v) for k, v in value.__dict__.items()}
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            return value

        return json.dumps({k: plain(v) for k, v in self.__dict__.items()}, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """A manifest may come from a host we do not trust (a remote target's backups): its id and every
        file name must be bare names, each file listed under its own name, before any becomes a path."""
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise ValueError(f"unknown manifest format {data.get('format')!r}")
        names = [data.get("id"), *data["files"], *(v.get("name") for v in data["files"].values())]
        unsafe = [n for n in names if not isinstance(n, str) or not is_bare(n) or n in (MANIFEST, VERIFIED)]
        if unsafe:
            raise ValueError(f"a name in the manifest is not a plain file name: {str(unsafe[0])[:80]!r}")
        if any(k != v["name"] for k, v in data["files"].items()):
            raise ValueError("a file of the manifest is listed under another name")
        data["files"] = {k: FileEntry(**v) for k, v in data["files"].items()}
        data["databases"] = {k: DatabaseEntry(**v) for k, v in data["databases"].items()}
        return cls(**data)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files.values())

    @property
    def rows(self) -> int:
        return sum(sum(d.tables.values()) for d in self.databases.values())

    @property
    def time(self) -> datetime:
        return datetime.fromisoformat(self.finished_at)


@dataclass(frozen=True)
class Entry:
    """One directory of the backups folder, as found."""

    id: str
    path: Path
    manifest: Manifest | None  # None: interrupted (or unreadable)
    verified: dict[str, Any] | None = None
    problem: str = ""

    @property
    def complete(self) -> bool:
        return self.manifest is not None

    @property
    def damaged(self) -> bool:
        """Not an interrupted backup (a `.partial` folder) but a finished one whose manifest cannot be
        read: its dumps may be whole, so it is shown and kept until someone looks at it."""
        return self.manifest is None and self.problem != "interrupted"


def new_id(now: datetime | None = None) -> str:
    """Sortable by time, unique even for two backups in the same second."""
    now = now or datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


@dataclass
class Store:
    root: Path  # <backups dir>/<env>

    @classmethod
    def of(cls, project_dir: Path, env: Environment) -> Store:
        """The environment's backups folder on this machine (`backup.directory`, relative to the project)."""
        folder = Path(env.backup.directory)
        return cls((folder if folder.is_absolute() else project_dir / folder) / env.name)

    def scan(self) -> list[Entry]:
        """Every backup directory, oldest first; interrupted ones have no manifest."""
        if not self.root.is_dir():
            return []
        names = [p.name for p in sorted(self.root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
        return [read_entry(LocalFiles(), self.root, name) for name in names]

    def complete(self) -> list[Entry]:
        return [e for e in self.scan() if e.complete]

    def get(self, backup_id: str | None) -> Entry:
        return pick(self.complete(), backup_id, str(self.root))

    @contextmanager
    def locked(self) -> Iterator[None]:
        """One backup or prune of an environment at a time. flock: a killed holder releases it, so a
        `.partial` directory found while holding the lock is an interrupted backup, never a running one."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise BackupError(f"another backup or prune of {self.root.name} is running") from None
            yield
        finally:
            os.close(fd)

    def begin(self, backup_id: str) -> Path:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.root.chmod(0o700)
        path = self.root / (backup_id + PARTIAL)
        path.mkdir(mode=0o700)
        return path

    def commit(self, partial: Path, manifest: Manifest) -> Path:
        write_atomic(partial / MANIFEST, manifest.to_json(), 0o600)
        fsync_dir(partial)
        final = self.root / manifest.id
        partial.rename(final)
        fsync_dir(self.root)
        return final

    def mark_verified(self, entry: Entry, record: dict[str, Any]) -> None:
        write_atomic(entry.path / VERIFIED, json.dumps(record, indent=2, sort_keys=True) + "\n", 0o600)
        fsync_dir(entry.path)

    def remove(self, entry: Entry) -> None:
        # Rename first: a half-removed backup must not look complete.
        doomed = entry.path.with_name("." + entry.path.name + ".removing")
        entry.path.rename(doomed)
        shutil.rmtree(doomed)
        fsync_dir(self.root)

    def leftovers(self) -> Iterator[Path]:
        """Folders a killed prune was removing (renamed away first, so never mistaken for backups)."""
        yield from self.root.glob(".*.removing") if self.root.is_dir() else []


def read_entry(files: Files, root: PurePath, name: str) -> Entry:
    """One folder of a backups folder, here or on a remote host (read through `files`)."""
    path = Path(str(root / name))
    if not is_bare(name):  # a listing (a remote host's above all) is not our word
        return Entry(name, path, None, problem="not a plain file name")
    if name.endswith(PARTIAL):
        return Entry(name.removesuffix(PARTIAL), path, None, problem="interrupted")
    try:
        text = files.read_text(root / name / MANIFEST)
        if text is None:
            return Entry(name, path, None, problem="no manifest")
        manifest = Manifest.from_json(text)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return Entry(name, path, None, problem=f"unreadable manifest: {exc}")
    if manifest.id != name:
        return Entry(name, path, None, problem=f"unreadable manifest: its id {manifest.id!r} is not its folder's")
    verified = None
    with suppress(OSError, ValueError):
        verified = json.loads(files.read_text(root / name / VERIFIED) or "null")
    return Entry(name, path, manifest, verified)


def receive(
    store: Store,
    manifest: Manifest,
    where: str,
    fetch: Callable[[str, Path], tuple[str, int]],
    verified: dict[str, Any] | None,
) -> Entry:
    """A complete backup from elsewhere (a remote host, an offsite store) into the local folder: each file
    written by `fetch(name, target)`, which answers the SHA-256 and size of what arrived; both must match
    the manifest, and a mismatch keeps nothing."""
    if (store.root / manifest.id).exists():
        raise BackupError(f"backup {manifest.id} is already in {store.root}")
    partial = store.begin(bare(manifest.id, "a backup id"))
    try:
        for name, expected in sorted(manifest.files.items()):
            digest, size = fetch(name, child(partial, name, "a file"))
            if digest != expected.sha256 or size != expected.size:
                raise BackupError(
                    f"{where}/{name}: SHA-256 {digest[:12]}… ({size} bytes) does not match the manifest's "
                    f"{expected.sha256[:12]}… ({expected.size} bytes); nothing was kept"
                )
        if verified is not None:
            (partial / VERIFIED).write_text(json.dumps(verified, indent=2, sort_keys=True) + "\n")
            (partial / VERIFIED).chmod(0o600)
        store.commit(partial, manifest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return store.get(manifest.id)


def pick(complete: list[Entry], backup_id: str | None, where: str) -> Entry:
    """The backup `backup_id` (the newest when None) among complete ones, or an error naming the newest."""
    if not complete:
        raise BackupError(f"no complete backup in {where}")
    if backup_id is None:
        return complete[-1]
    for entry in complete:
        if entry.id == backup_id:
            return entry
    known = ", ".join(e.id for e in complete[-5:])
    raise BackupError(f"no complete backup {backup_id!r} in {where} (newest: {known})")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- retention and monitoring (pure) -----------------------------------------------------------------
@dataclass(frozen=True)
class PrunePlan:
    keep: list[Entry] = field(default_factory=list)
    remove: list[Entry] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)


def plan_prune(entries: list[Entry], keep: int, max_age_days: int | None, now: datetime) -> PrunePlan:
    """Keep the newest `keep` complete, verified backups: they are never removed, whatever their age.
    Remove every interrupted one. A complete backup newer than every kept one stays (it may be verified
    later); an older one goes once `keep` verified backups exist, or when it is older than max-age."""
    verified = [e for e in entries if e.complete and e.verified and e.verified.get("ok")]
    kept = verified[-keep:] if keep > 0 else []
    kept_ids = {e.id for e in kept}
    newest_kept = kept[-1].manifest.time if kept and kept[-1].manifest else None
    cutoff = now - timedelta(days=max_age_days) if max_age_days is not None else None
    plan = PrunePlan()
    for e in entries:
        reason = None
        if e.id in kept_ids:
            pass
        elif e.damaged:
            pass  # never removed by a rule: `backup list` shows it as damaged
        elif e.manifest is None:
            reason = "interrupted"
        elif newest_kept is None or e.manifest.time > newest_kept:
            pass  # no verified backup is newer: nothing supersedes it yet
        elif len(kept) >= keep:
            reason = f"beyond the newest {keep} verified"
        elif cutoff is not None and e.manifest.time < cutoff:
            reason = f"older than {max_age_days} days"
        if reason is None:
            plan.keep.append(e)
        else:
            plan.remove.append(e)
            plan.reasons[e.id] = reason
    return plan


def staleness(entries: list[Entry], max_hours: float, now: datetime) -> str | None:
    """None when the newest complete backup is recent enough; otherwise why not."""
    complete = [e for e in entries if e.manifest is not None]
    if not complete:
        return "no complete backup exists"
    newest = complete[-1]
    assert newest.manifest is not None
    if newest.verified is not None and not newest.verified.get("ok"):
        return f"the newest complete backup, {newest.id}, failed verification: it may not restore"
    age = now - newest.manifest.time
    if age > timedelta(hours=max_hours):
        hours = age.total_seconds() / 3600
        return f"the newest complete backup, {newest.id}, is {hours:.1f} h old (policy: {max_hours:g} h)"
    return None
