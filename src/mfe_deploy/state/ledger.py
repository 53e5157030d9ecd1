"""The release ledger and the audit log: JSON lines, appended with fsync, per environment."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


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
    migrations: Mapping[str, str] = field(default_factory=dict)  # service -> head migration id
    note: str = ""


def append_line(path: Path, record: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    with os.fdopen(fd, "a") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a torn last line after a crash is skipped, not fatal
    return out


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path

    def all(self) -> list[Release]:
        return [Release(**r) for r in read_lines(self.path)]

    def next_id(self) -> int:
        releases = self.all()
        return releases[-1].id + 1 if releases else 1

    def record(self, release: Release) -> None:
        append_line(self.path, asdict(release))

    def last_good(self) -> Release | None:
        good = [r for r in self.all() if r.outcome == "succeeded"]
        return good[-1] if good else None

    def previous_version(self, service: str, current: str) -> str | None:
        """The version of `service` in the newest successful release that ran another version."""
        for release in reversed(self.all()):
            version = release.versions.get(service)
            if release.outcome == "succeeded" and version and version != current:
                return version
        return None
