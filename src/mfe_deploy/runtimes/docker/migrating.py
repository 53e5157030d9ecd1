"""The docker runtime's migrations: the runner in one-off containers of the release's images (it ships with
them); a service of yours gets it from a bundled image, its folder mounted and its database's URL."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

from mfe_deploy.config import urls
from mfe_deploy.ops import migrations
from mfe_deploy.render import ENV_IN_CONTAINER, SERVICE_UID
from mfe_deploy.runtimes.docker.commands import runner_in
from mfe_deploy.runtimes.docker.site import ComposeSite


def in_containers(rt: ComposeSite, services: list[str], action: list[str]) -> list[migrations.Outcome]:
    """The migration runner in one-off containers of the running images (it ships with them)."""

    def one(service: str) -> migrations.Outcome:
        svc = rt.env.services[service]
        if svc.bundled:
            # The service's own container, as root only until the runner has read its mounted env file.
            cmd = rt.compose.run_once(service, "python3", *_bundled_runner(rt, service, action))
            return migrations.parse(service, rt.runner.run(cmd, timeout=600))
        if svc.migrations is None:
            return migrations.nothing(service)
        # Your image need not hold the runner: it runs in a one-off container of a bundled image
        # (on the same networks), with your folder mounted and your database's URL.
        host_folder = rt.files_for_migrations(service)
        url = urls.database_url(rt.env, rt.secrets, service, "postgres", 5432)
        cmd = rt.compose.run_once(
            rt.runner_service(),
            "python3",
            *migrations.runner_args(rt.env.name, service, action),
            mounts=[f"{host_folder}:/run/mfe/migrations:ro"],
            env=["MFE_MIGRATIONS_FOLDER=/run/mfe/migrations", "DATABASE_URL"],
        )
        cmd = dataclasses.replace(cmd, env={**cmd.env, "DATABASE_URL": url})
        return migrations.parse(service, rt.runner.run(cmd, timeout=600))

    # The first one-off container creates the project's networks; concurrent first runs would each
    # create their own (Docker allows duplicate names), so the rest follow it in parallel.
    first = one(services[0])
    with ThreadPoolExecutor(3) as pool:
        return [first, *pool.map(one, services[1:])]


def status_in_running(rt: ComposeSite, service: str, container: str) -> migrations.Outcome:
    """What the running code's runner says of a bundled service's database, from inside a running container
    of it (a rollback's verdict asks the code that runs now): `docker exec`, whose exit code tells."""
    cmd = runner_in(container, _bundled_runner(rt, service, ["status"]))
    return migrations.parse(service, rt.runner.run(cmd, timeout=600))


def _bundled_runner(rt: ComposeSite, service: str, action: list[str]) -> tuple[str, ...]:
    secret = ("--env-file", ENV_IN_CONTAINER, "--user", SERVICE_UID)
    return migrations.runner_args(rt.env.name, service, [*secret, *action])
