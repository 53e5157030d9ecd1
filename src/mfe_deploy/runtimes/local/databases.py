"""The local runtime's PostgreSQL cluster: psql as its superuser, the roles and databases made once and
for every new service, started and waited on out of recovery, and pgBackRest for database.pitr."""

from __future__ import annotations

import dataclasses
import secrets
import shutil
import time
from collections.abc import Mapping

from mfe_deploy.backups import pg
from mfe_deploy.backups.pg import LocalPostgres
from mfe_deploy.backups.pitr import PitrTool
from mfe_deploy.binaries import Binaries
from mfe_deploy.errors import MfeError
from mfe_deploy.exec.runner import Completed
from mfe_deploy.exec.secret import Secret
from mfe_deploy.local_bundle import PG_SYSTEM_USER, pitr_offsite_path
from mfe_deploy.render import provision_script
from mfe_deploy.runtimes.contract import StartFailed
from mfe_deploy.runtimes.local import logs, machine, supervisord
from mfe_deploy.runtimes.local.site import Site

INIT_MARKER = ".mfe-initialized"  # in the data folder: the roles and databases were made


def psql(
    rt: Site, bins: Binaries, database: str, script: str | Secret, extra_env: Mapping[str, str | Secret]
) -> Completed:
    """`script` run by psql as the superuser on `database` (read on its standard input: a script that holds
    passwords never reaches an argv); `extra_env`: the variables it reads with \\getenv."""
    db = rt.env.database
    command = pg.session(LocalPostgres(bins.pg_bin, db.port, db.superuser, rt.secrets.postgres_password), database)
    command = dataclasses.replace(command, env={**extra_env, **command.env}, input=script)
    return rt.runner.run(command, timeout=120)


def init_databases(rt: Site, bins: Binaries) -> None:
    """Once per cluster: the roles and databases the docker entrypoint would create from initdb/."""
    marker = rt.layout.data / INIT_MARKER
    if marker.exists():
        return
    unit = {k: (v.reveal() if isinstance(v, Secret) else str(v)) for k, v in rt.unit_variables()["postgres"]}
    deadline = time.monotonic() + 30
    while psql(rt, bins, "postgres", "SELECT 1", {}).returncode != 0:  # port open is not ready yet
        if time.monotonic() > deadline:
            raise StartFailed(f"postgres does not accept connections\n{logs.tail(rt, 'postgres', 15)}")
        time.sleep(0.2)
    if unit["POSTGRES_DB"] != "postgres":
        done = psql(rt, bins, "postgres", f'CREATE DATABASE "{unit["POSTGRES_DB"]}"', {})
        if done.returncode != 0:
            raise StartFailed(f"creating {unit['POSTGRES_DB']} failed: {done.stderr.strip()}")
    script = (rt.layout.bundle / "initdb" / "10-databases.sql").read_text()
    # The script reads the passwords from its environment (psql's \getenv): kept Secret, never printed.
    variables = {k: v if isinstance(v, Secret) else str(v) for k, v in rt.unit_variables()["postgres"]}
    done = psql(rt, bins, unit["POSTGRES_DB"], script, variables)
    if done.returncode != 0:
        raise StartFailed(f"creating the service databases failed: {done.stderr.strip()}")
    marker.write_text("roles and databases created\n")


def provision(rt: Site, bins: Binaries) -> None:
    """Every up: a database service added since the cluster was made gets its role and database."""

    script = provision_script(rt.env, rt.secrets, f"mfe_{secrets.token_hex(6)}")
    done = psql(rt, bins, "postgres", script, {})
    if done.returncode != 0:
        raise StartFailed(f"creating the roles and databases of new services failed: {done.stderr.strip()}")


def start_postgres(rt: Site, bins: Binaries, timeout: float) -> None:
    """Start the cluster and wait until it accepts connections out of recovery (a point-in-time
    restore replays WAL first, then promotes)."""
    supervisord.start_programs(rt, ["postgres"])
    wait_promoted(rt, bins, timeout)


def wait_promoted(rt: Site, bins: Binaries, timeout: float) -> None:
    """Until the cluster accepts connections out of recovery: at once for one that was never restored; a
    restored one answers read-only while it replays the WAL, and only then takes writes."""

    def promoted() -> bool:
        done = psql(rt, bins, "postgres", "SELECT 'recovery=' || pg_is_in_recovery()", {})
        return done.returncode == 0 and "recovery=false" in done.stdout

    try:
        supervisord.wait(rt, promoted, timeout, "PostgreSQL to replay its WAL and promote")
    except StartFailed:
        raise StartFailed(f"PostgreSQL did not come back\n{logs.tail(rt, 'postgres', 15)}") from None


def seed_from_offsite(rt: Site, tool: PitrTool | None) -> None:
    """`recover` with database.pitr, where initdb would make the cluster: its empty data folder restored from
    the offsite copy of pgBackRest's repository (the newest full backup and every WAL segment after it),
    with its roles and databases; supervisord then starts it, and it replays the WAL to its end and
    promotes. Refused over a cluster that is there; a failed restore takes the data folder away again."""
    if tool is None or tool.repos < 2:
        where = f"environments/{rt.env.name}.yaml: backup.offsite"
        raise MfeError(f"{where}: recover reads the offsite WAL with this store's credentials, not set here")
    pg_data = rt.layout.pg_data
    if (pg_data / "PG_VERSION").exists():
        raise MfeError(
            f"{pg_data} already holds a PostgreSQL cluster of {rt.env.name}: recover rebuilds a lost host in an "
            f"empty project folder; here, `restore --to-time --from offsite` brings this cluster to a moment"
        )
    try:
        with rt.console.status("restoring PostgreSQL from the offsite copy (pgBackRest: its newest full backup)"):
            tool.restore_latest(2)
    except BaseException:
        shutil.rmtree(pg_data, ignore_errors=True)  # the next up makes it again (prepare_dirs), empty
        raise
    (rt.layout.data / INIT_MARKER).write_text("roles and databases restored (recover)\n")


def replayed_until(rt: Site) -> str | None:
    """The moment of the last transaction a restored cluster replayed, as PostgreSQL logged it when it
    ended its recovery (`last completed transaction was at log time ...`); None when it did not say."""
    path = logs.log_file(rt, "postgres")
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    marker = "last completed transaction was at log time"
    said = [line.split(marker, 1)[1].strip() for line in lines if marker in line]
    return said[-1] if said else None


def pitr_tool(rt: Site, bins: Binaries) -> PitrTool | None:
    pitr = rt.env.database.pitr
    if pitr is None or bins.pgbackrest is None:
        return None
    user = PG_SYSTEM_USER if machine.as_root() else None
    paths = rt.layout.pitr
    repos = 2 if rt.env.backup.offsite is not None and rt.secrets.offsite is not None else 1
    offsite = rt.env.backup.offsite
    where = f"{offsite.bucket}{pitr_offsite_path(rt.env)}/" if offsite is not None else ""
    return PitrTool(rt.env, pitr, paths, bins.pgbackrest, rt.runner, rt.secrets.postgres_password, user, repos, where)
