"""`recover` with database.pitr: a lost host rebuilt from the offsite copy of its WAL. `up` runs the release's
plan as always, except that its new cluster is restored where it would be made empty (the newest offsite full
backup, then every WAL segment archived after it): PostgreSQL replays the WAL to its end and
promotes before the roles, migrations and services are looked at, so nothing is created or migrated over the
restored data. Without database.pitr, `recover` loads the newest offsite dump (cli/backup.py)."""

from __future__ import annotations

from mfe_deploy.app.up import Report, up
from mfe_deploy.errors import MfeError
from mfe_deploy.runtimes.contract import Reseeds, Runtime


def from_wal(rt: Runtime, report: Report, *, version: str, timeout: float) -> str | None:
    """The stack back at `version` on the restored cluster; the last transaction it replayed (None: not said)."""
    if not isinstance(rt, Reseeds):
        raise MfeError(
            f"recover from the offsite WAL (database.pitr) runs on the local runtime: the {rt.name} runtime "
            "archives no WAL"
        )
    report.info("recover: the cluster from the offsite WAL first, then the stack on it")
    rt.seed_from_offsite()
    up(rt, report, version=version, wait=True, timeout=timeout)
    return rt.replayed_until()
