"""`restore --to-time` on the local runtime (database.pitr): the cluster brought to a moment by pgBackRest.

Fenced as a restore from a dump is: the services that use a database stop first (no write can be
acknowledged from then on), a pre-restore backup is taken and the WAL written so far archived (every
acknowledged write is then in both), PostgreSQL stops, its data folder is set aside, pgBackRest restores
the newest full backup before the moment and replays the WAL up to it, and PostgreSQL starts and promotes.
If any of that fails, the set-aside folder comes back as it was. The services start healthy after, and the
rows the restore removed (written after the moment) are reported, table by table."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mfe_deploy.backups import pg
from mfe_deploy.backups.jobs import Backups, lost
from mfe_deploy.backups.pitr import PitrError, PitrTool, Window
from mfe_deploy.backups.store import DatabaseEntry
from mfe_deploy.runtimes.contract import PointRestored


@dataclass
class LocalPointInTime:
    tool: PitrTool
    backups: Callable[[], Backups]
    pg_data: Path
    chown: Callable[[Path], None]  # a folder made here becomes the cluster user's
    stop_programs: Callable[[Sequence[str]], None]
    start_programs: Callable[[Sequence[str], float], None]  # and wait until they are healthy
    start_postgres: Callable[[float], None]  # and wait until it accepts connections, out of recovery

    def backup(self) -> None:
        self.tool.backup()

    def window(self, *, offsite: bool = False) -> Window:
        return self.tool.window(2 if offsite else None)

    def restore_to(self, target: datetime, timeout: float, *, offsite: bool = False) -> PointRestored:
        started = time.monotonic()
        if offsite and self.tool.repos < 2:
            raise PitrError(
                "restore --to-time --from offsite: backup.offsite is not set, so the WAL is archived here only"
            )
        repo = 2 if offsite else None
        window = self.tool.window(repo)
        refusal = window.refusal(target, datetime.now(UTC))
        if refusal is not None:
            raise PitrError(f"restore --to-time: {refusal}; nothing was changed")
        backups = self.backups()
        console = backups.console
        targets = pg.targets(backups.env)
        services = [t.service for t in targets]
        console.info(f"stopping {', '.join(services)}")
        self.stop_programs(services)
        try:
            console.info(f"taking a pre-restore backup of {', '.join(services)}")
            pre = backups.backup(targets, kind="pre-restore")
            with console.status("archiving the WAL written so far"):
                self.tool.archive_now()
            self._replace_cluster(target, timeout, repo)
            after = {t.service: DatabaseEntry(t.service, t.database, t.schema, backups.count(t)) for t in targets}
        finally:
            console.info(f"starting {', '.join(services)}")
            self.start_programs(services, timeout)
        gone = [line for s in services for line in lost(after[s], pre.databases[s])]
        return PointRestored(target.isoformat(), pre.id, gone, time.monotonic() - started)

    def _replace_cluster(self, target: datetime, timeout: float, repo: int | None) -> None:
        console = self.backups().console
        aside = self.pg_data.with_name(self.pg_data.name + ".before-restore")
        shutil.rmtree(aside, ignore_errors=True)  # a restore killed earlier, whose cluster came back
        self.stop_programs(["postgres"])
        self.pg_data.rename(aside)
        try:
            self.pg_data.mkdir(mode=0o700)
            self.chown(self.pg_data)
            with console.status(f"restoring PostgreSQL to {target.isoformat()} (pgBackRest)"):
                self.tool.restore_to(target, repo)
            with console.status("replaying the WAL up to that moment"):
                self.start_postgres(timeout)
        except BaseException:
            self.stop_programs(["postgres"])
            shutil.rmtree(self.pg_data, ignore_errors=True)
            aside.rename(self.pg_data)
            self.start_postgres(timeout)
            raise
        shutil.rmtree(aside, ignore_errors=True)
