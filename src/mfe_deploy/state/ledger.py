"""The release ledger and the audit log: JSON lines, appended with fsync, per environment."""

from __future__ import annotations

import getpass
import json
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import PurePath
from typing import Any

from mfe_deploy.exec.host import RELEASES, Files, Host


@dataclass(frozen=True)
class Release:
    id: int
    time: str
    who: str
    kind: str  # up, rollback, auto-rollback
    outcome: str  # succeeded, failed, rolled-back
    versions: Mapping[str, str]
    images: Mapping[str, str] = field(default_factory=dict)  # service -> image id
    bundle_sha256: str = ""
    # service -> the schema's head migration after this release's migrate step (applied then or before);
    # absent when the step was skipped (these images had migrated this database already)
    migrations: Mapping[str, str] = field(default_factory=dict)
    note: str = ""
    backup: str = ""  # the backup taken just before this release's migrations (empty: none was needed)
    # The moment just before this release applied its migrations (UTC, ISO 8601; empty: it applied none):
    # what `restore --before-release` brings the databases back to.
    migrated_at: str = ""


def append_line(files: Files, path: PurePath, record: Mapping[str, Any]) -> None:
    files.append_line(path, json.dumps(record, sort_keys=True) + "\n")


def read_lines(files: Files, path: PurePath) -> list[dict[str, Any]]:
    out = []
    for line in (files.read_text(path) or "").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a torn last line after a crash is skipped, not fatal
    return out


class Ledger:
    def __init__(self, files: Files, path: PurePath) -> None:
        self.files = files
        self.path = path

    @classmethod
    def of(cls, host: Host) -> Ledger:
        return cls(host.files, host.state / RELEASES)

    def all(self) -> list[Release]:
        known = {f.name for f in fields(Release)}  # a ledger written by a newer version keeps working
        return [Release(**{k: v for k, v in r.items() if k in known}) for r in read_lines(self.files, self.path)]

    def get(self, release_id: int) -> Release | None:
        return next((r for r in self.all() if r.id == release_id), None)

    def next_id(self) -> int:
        releases = self.all()
        return releases[-1].id + 1 if releases else 1

    def record(self, release: Release) -> None:
        append_line(self.files, self.path, asdict(release))

    def append(self, kind: str, outcome: str, versions: Mapping[str, str], **details: Any) -> Release:
        """A new release, numbered after the last, stamped now and with who ran it (user@host), recorded."""
        release = Release(
            id=self.next_id(),
            time=datetime.now(UTC).isoformat(timespec="seconds"),
            who=f"{getpass.getuser()}@{socket.gethostname()}",
            kind=kind,
            outcome=outcome,
            versions=versions,
            **details,
        )
        self.record(release)
        return release

    def last_good(self) -> Release | None:
        good = [r for r in self.all() if r.outcome == "succeeded"]
        return good[-1] if good else None

    def running(self) -> dict[str, Any] | None:
        """The last good release as a backup's manifest records it (the release its data belongs to)."""
        good = self.last_good()
        return {"id": good.id, "time": good.time, "versions": dict(good.versions)} if good else None

    def previous_version(self, service: str, current: str) -> str | None:
        """The version of `service` in the newest successful release that ran another version."""
        for release in reversed(self.all()):
            version = release.versions.get(service)
            if release.outcome == "succeeded" and version and version != current:
                return version
        return None
