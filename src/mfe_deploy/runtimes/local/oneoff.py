"""One-off commands on the local runtime: a process with a service's variables (as supervisord starts it),
and psql as a service's own role, its password in a private pgpass file, never in an argv or environment."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mfe_deploy.errors import MfeError
from mfe_deploy.exec.command import Command
from mfe_deploy.exec.host import own_folder
from mfe_deploy.exec.withenv import read_env_file
from mfe_deploy.runtimes.local import supervisord
from mfe_deploy.runtimes.local.site import Site
from mfe_deploy.runtimes.oneoff import psql_target


def service_values(rt: Site, service: str) -> dict[str, str]:
    if service not in rt.env.services:
        raise MfeError(f"unknown service {service!r}; one of: {', '.join(rt.env.services)}")
    env_file = rt.layout.env_file(service)
    if not env_file.exists():
        raise MfeError(f"{service} has no environment file yet: run `mfe-deploy up --env {rt.env.name}` first")
    return read_env_file(str(env_file))


def run(rt: Site, service: str, argv: Sequence[str], *, in_place: bool) -> int:
    """A process with the service's variables, as supervisord starts the service (no container to enter:
    exec is run here), from the project folder; only the basic variables of this shell reach it."""
    values = service_values(rt, service)
    environ = {**{k: v for k, v in os.environ.items() if k in supervisord.INHERITED | {"TERM"}}, **values}
    return rt.runner.attach(Command(tuple(argv), env=environ, cwd=rt.project_dir, inherit=False))


def db_shell(rt: Site, service: str, args: Sequence[str]) -> int:
    if service not in rt.env.database_services:
        raise MfeError(f"{service} owns no database; those that do: {', '.join(rt.env.database_services)}")
    target = psql_target(service_values(rt, service)["DATABASE_URL"])
    psql = str(rt.bins().pg_bin / "psql")
    environ = {k: v for k, v in os.environ.items() if k in supervisord.INHERITED | {"TERM", "PAGER"}}
    own_folder(rt.layout.run)
    with tempfile.NamedTemporaryFile("w", dir=rt.layout.run, prefix="pgpass", delete=False) as pgpass:
        pgpass.write(target.pgpass_line())
    try:
        argv = [psql, *target.args(), *args]
        return rt.runner.attach(Command(tuple(argv), env={**environ, "PGPASSFILE": pgpass.name}, inherit=False))
    finally:
        Path(pgpass.name).unlink(missing_ok=True)
