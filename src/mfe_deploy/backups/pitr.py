"""Point-in-time recovery with pgBackRest (`database.pitr`, local runtime).

PostgreSQL archives each WAL segment with `pgbackrest archive-push` as it fills, and at least every
`archive_timeout`; `backup` takes a pgBackRest full backup beside its dumps (the newest `keep_full` are
kept, and the WAL they need). `restore --to-time T` replays the WAL onto the newest full backup before T
into a fresh data folder, and promotes it there: every transaction committed before T, none after.

pgBackRest runs as the cluster's user, with everything it writes in a folder beside the cluster
(`pgbackrest/`: its configuration, repository, logs, locks), and reaches the server by its own socket
folder. Its connection reads the superuser's password from a pgpass file (0600, the cluster user's)
that exists only while a command that connects runs: never in argv or the environment."""

from __future__ import annotations

import json
import os
import pwd
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mfe_deploy.backups.store import BackupError
from mfe_deploy.config.models import Environment, Pitr
from mfe_deploy.exec.command import Command
from mfe_deploy.exec.runner import Runner
from mfe_deploy.exec.secret import Secret
from mfe_deploy.local_bundle import PitrPaths


class PitrError(BackupError):
    pass


@dataclass(frozen=True)
class Window:
    """What `restore --to-time` can reach: from the end of the oldest full backup kept to now (less the
    WAL not archived yet: at most archive_timeout)."""

    earliest: datetime | None  # None: no full backup yet
    backups: int

    def refusal(self, target: datetime, now: datetime) -> str | None:
        if self.earliest is None:
            return "no pgBackRest full backup exists yet (`backup` takes one)"
        if target < self.earliest:
            return f"{target.isoformat()} is before the oldest recoverable moment, {self.earliest.isoformat()}"
        if target >= now:
            return f"{target.isoformat()} is not in the past"
        return None


def _full_backups(info_json: str, stanza: str) -> list[dict[str, Any]]:
    """`pgbackrest info --output=json`: the stanza's complete full backups, in every repository."""
    for item in json.loads(info_json):
        if item.get("name") == stanza:
            return [b for b in item.get("backup", []) if b.get("type") == "full" and not b.get("error")]
    return []


def repos_with_full(info_json: str, stanza: str) -> set[int]:
    """The repositories (1, 2) that hold a full backup of the stanza."""
    return {int((b.get("database") or {}).get("repo-key", 1)) for b in _full_backups(info_json, stanza)}


def parse_window(info_json: str, stanza: str) -> Window:
    """The window of the stanza's full backups, oldest first."""
    full = _full_backups(info_json, stanza)
    if not full:
        return Window(None, 0)
    stop = min(int(b["timestamp"]["stop"]) for b in full)
    return Window(datetime.fromtimestamp(stop, UTC), len(full))


@dataclass
class PitrTool:
    env: Environment
    pitr: Pitr
    paths: PitrPaths
    pgbackrest: Path
    runner: Runner
    password: Secret
    user: str | None  # the cluster's user when we are root (commands run as it); None: we are it
    repos: int = 1  # 2: the second repository is on the offsite store (local_bundle.pgbackrest_conf)
    offsite_path: str = ""  # that repository's folder in the bucket

    def _command(self, *args: str) -> Command:
        as_user = ("runuser", "-u", self.user, "--") if self.user else ()
        argv = (*as_user, str(self.pgbackrest), f"--config={self.paths.conf}", f"--stanza={self.env.name}", *args)
        return Command(argv, env={"PGPASSFILE": str(self.paths.pgpass)})

    @contextmanager
    def _pgpass(self) -> Iterator[None]:
        line = f"*:*:*:{self.env.database.superuser}:{self.password.reveal()}\n"
        fd = os.open(self.paths.pgpass, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(line)
            if self.user:
                entry = pwd.getpwnam(self.user)
                os.chown(self.paths.pgpass, entry.pw_uid, entry.pw_gid)
            yield
        finally:
            self.paths.pgpass.unlink(missing_ok=True)

    def run(self, *args: str, timeout: float = 600) -> str:
        with self._pgpass():
            done = self.runner.run(self._command(*args), timeout=timeout)
        if done.returncode != 0:
            lines = (done.stderr.strip() or done.stdout.strip()).splitlines() or [f"exit {done.returncode}"]
            verb = next(a for a in args if not a.startswith("--"))
            # Its ERROR line says what went wrong; the HINT lines after it guess why.
            said = next((x.strip() for x in lines if "ERROR: [" in x), lines[-1].strip())
            if verb == "stanza-create" and self.repos > 1 and "ERROR: [028]" in said:
                raise PitrError(
                    f"the offsite store already holds the WAL and backups of another PostgreSQL cluster of "
                    f"{self.env.name} (a host that ran it before this one); nothing is archived over it. "
                    f"To start afresh here, delete {self.offsite_path} from the bucket first ({said})"
                )
            raise PitrError(f"pgbackrest {verb} failed: {said}")
        return done.stdout

    def ensure(self) -> bool:
        """The stanza, and a first full backup in each repository that has none; True when one was taken."""
        self.run("stanza-create", timeout=120)
        held = repos_with_full(self.run("info", "--output=json", timeout=120), self.env.name)
        missing = [repo for repo in range(1, self.repos + 1) if repo not in held]
        for repo in missing:
            self.run(f"--repo={repo}", "--type=full", "backup", timeout=3600)
        return bool(missing)

    def backup(self) -> None:
        """A full backup in each repository (pgBackRest backs up to one per command)."""
        for repo in range(1, self.repos + 1):
            self.run(f"--repo={repo}", "--type=full", "backup", timeout=3600)

    def window(self, repo: int | None = None) -> Window:
        """What a restore can reach: from every repository, or from `repo` alone."""
        return parse_window(self.run(*_only(repo), "info", "--output=json", timeout=120), self.env.name)

    def archive_now(self) -> None:
        """The WAL segment being written is archived now (pgbackrest check switches it and waits)."""
        self.run("check", timeout=180)

    def restore_to(self, target: datetime, repo: int | None = None) -> None:
        """Into the (empty) data folder: the newest full backup before `target`, then WAL replay to it; from
        `repo` alone when given (else pgBackRest takes the first repository that can)."""
        self.run(
            *_only(repo),
            "--type=time",
            # pgBackRest's own format: "YYYY-MM-DD HH:MM:SS.ffffff+00" (not ISO 8601's T)
            f"--target={target.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S.%f')}+00",
            "--target-action=promote",
            "--target-exclusive",
            "restore",
            timeout=3600,
        )

    def restore_latest(self, repo: int) -> None:
        """Into the (empty) data folder: `repo`'s newest full backup, with every WAL segment the repository
        holds after it: PostgreSQL replays them all when it starts, then promotes (`recover`)."""
        self.run(f"--repo={repo}", "--type=default", "restore", timeout=3600)


def _only(repo: int | None) -> tuple[str, ...]:
    """pgBackRest's option for one repository; none: every one (or the first that can)."""
    return (f"--repo={repo}",) if repo is not None else ()
