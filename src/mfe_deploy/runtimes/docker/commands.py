"""The `docker exec` command lines the docker runtime runs in its containers: pure, built from values, so a
test reads them without an engine."""

from __future__ import annotations

from collections.abc import Sequence

from mfe_deploy.config.models import Service
from mfe_deploy.exec.command import Command
from mfe_deploy.render import SERVICE_UID, SOURCE_ENV
from mfe_deploy.runtimes.docker.probes import probe_command

POSTGRES_SOCKETS = "/var/run/postgresql"


def streams(tty: bool) -> tuple[str, ...]:
    return ("-i", "-t") if tty else ("-i",)


def run_in(container: str, argv: Sequence[str], *, tty: bool) -> Command:
    """A one-off command in a running container of a service: its variables sourced from the env file
    mounted inside the container (never in an argv or the exec's environment), then the command as the
    service's user. HOME: root's is closed to that user (libpq looks there for a client certificate)."""
    uid, gid = SERVICE_UID.split(":")
    script = f'{SOURCE_ENV}; HOME=/tmp exec setpriv --reuid={uid} --regid={gid} --clear-groups "$@"'
    return Command(("docker", "exec", *streams(tty), "--user", "0", container, "sh", "-c", script, "sh", *argv))


def psql_in(postgres: str, user: str, database: str, args: Sequence[str], *, tty: bool) -> Command:
    """psql in the postgres container over its socket, as `user` on `database` (peer-free: the role's own)."""
    head = ("docker", "exec", *streams(tty), "--user", "postgres", postgres, "psql", "-h", POSTGRES_SOCKETS)
    return Command((*head, "-U", user, "-d", database, *args))


def probe_in(container: str, svc: Service) -> Command:
    """What `health` runs in a service's container, as the service's user (a bundled service's container
    starts as root, to read its env file)."""
    return Command(("docker", "exec", "--user", SERVICE_UID, container, *probe_command(svc)))


def runner_in(container: str, runner: Sequence[str]) -> Command:
    """The migration runner in a running container of a bundled service, as root only until it has read the
    mounted env file (its `--env-file` and `--user`): no one-off container to create and start."""
    return Command(("docker", "exec", "--user", "0", container, "python3", *runner))
