"""The backup `up` takes just before it migrates (`backup.before_migrate`, on outside development): of
each database with a migration pending that already has applied ones (a fresh database has nothing to
lose). Its id goes into the release, so that `rollback SERVICE --restore-backup` finds the state the
older code ran against."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mfe_deploy.backups import pg
from mfe_deploy.backups.jobs import Backups
from mfe_deploy.config.models import Environment
from mfe_deploy.console import Console
from mfe_deploy.errors import MfeError
from mfe_deploy.ops.migrations import Outcome
from mfe_deploy.runtimes.contract import StartFailed

KIND = "pre-migration"


def databases(status: Sequence[Outcome]) -> list[str]:
    """The services whose database a migration is about to change and that hold applied ones."""
    wanted = []
    for o in status:
        states = {m.get("state") for m in o.data.get("migrations", [])}
        if o.ok and "pending" in states and "applied" in states:
            wanted.append(o.service)
    return wanted


def take(backups: Backups, services: Sequence[str]) -> str:
    """The backup's id; a failure stops the deploy before anything is migrated."""
    targets = [t for t in pg.targets(backups.env) if t.service in services]
    try:
        return backups.backup(targets, kind=KIND).id
    except MfeError as exc:
        raise StartFailed(
            f"the backup before migrating {', '.join(services)} failed, nothing was migrated: {exc} "
            "(`backup.before_migrate: false` in the environment deploys without one)"
        ) from None


def before_migrating(
    env: Environment,
    console: Console,
    migrate: Callable[[list[str], list[str]], list[Outcome]],
    services: list[str],
    backups: Callable[[], Backups],
    status: Sequence[Outcome] | None = None,
) -> str:
    """Ask the runner what is pending (unless `status` says it already) and back up those databases: the
    backup's id, or "" (off, or nothing to lose)."""
    if not env.backs_up_before_migrate:
        return ""
    if status is None:
        with console.status("looking for pending migrations"):
            status = migrate(services, ["status"])
    wanted = databases(status)
    return take(backups(), wanted) if wanted else ""
