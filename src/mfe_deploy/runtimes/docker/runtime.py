"""The docker runtime: the rendered bundle driven by Compose v2 on a Docker Engine."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache, cached_property
from pathlib import PurePath

from mfe_deploy import bundle
from mfe_deploy.backups.pg import ComposePostgres, Postgres
from mfe_deploy.compose import (
    STORES_PROBE,
    Compose,
    ContainerState,
    find,
    parse_hashes,
    parse_ps,
    stores_only,
)
from mfe_deploy.config.urls import DB_TLS_DIR
from mfe_deploy.engine import capabilities, capabilities_for, version_via
from mfe_deploy.errors import MfeError
from mfe_deploy.exec.command import Command
from mfe_deploy.exec.host import Files
from mfe_deploy.exec.withenv import parse_env_text
from mfe_deploy.ops import health, migrations
from mfe_deploy.plan import Desired, Observed, Step, plan
from mfe_deploy.render import (
    GREEN_FLAG,
    MAINTENANCE_DIR,
    Bundle,
    Capabilities,
    render,
)
from mfe_deploy.runtimes import eventhub
from mfe_deploy.runtimes.contract import (
    Deployment,
    Fallback,
    Prepared,
    StartFailed,
    UnitStatus,
)
from mfe_deploy.runtimes.docker import commands, migrating, planning
from mfe_deploy.runtimes.docker.base import EngineRuntime
from mfe_deploy.runtimes.docker.probes import parse_probe
from mfe_deploy.runtimes.docker.rollout import Rollout
from mfe_deploy.runtimes.oneoff import psql_target
from mfe_deploy.state.ledger import Release


class DockerRuntime(EngineRuntime):
    name = "docker"

    def __init__(self, deployment: Deployment) -> None:
        super().__init__(deployment)
        self._compose: Compose | None = None
        self._nginx_changed = False  # nginx.conf was rewritten by this command: nginx must reload
        self._renders: dict[tuple[tuple[str, str], ...], Bundle] = {}
        self._stores_restarted = False  # this up restarted a store (--restart-stores)

    @property
    def lacks(self) -> dict[str, str]:
        lacks = {"Nodes": "the docker runtime runs on one host: nodes are a swarm's (runtime: swarm)"}
        if self.host.remote:
            lacks["OneOff"] = f"one-off commands on a remote host ({self.host.name}) are not there yet"
        return lacks

    @cached_property
    def capabilities(self) -> Capabilities:
        """What the engine that runs the stack supports (asked once per command)."""
        return capabilities_for(version_via(self.runner)) if self.host.remote else capabilities(None)

    @property
    def compose(self) -> Compose:
        if self._compose is None:
            self._compose = Compose(find(self.runner if self.host.remote else None), self.bundle_dir)
        return self._compose

    # --- versions and images ---------------------------------------------------------------------------
    @cached_property
    def rollout(self) -> Rollout:
        """Start-first replacement on this engine (compose is found when first needed)."""
        return Rollout(self.env, self.compose, self.runner, self.files, self.bundle_dir, self.console, self.containers)

    # --- rendering -----------------------------------------------------------------------------------------
    def _render(self, versions: dict[str, str]) -> Bundle:
        """The bundle of these versions, rendered once per command (the store guard, the write and the plan
        of one `up` read the same one)."""
        key = tuple(sorted(versions.items()))
        if key not in self._renders:
            self._renders[key] = render(self.env, self.secrets, versions=versions, caps=self.capabilities)
        return self._renders[key]

    def write_bundle(self, versions: dict[str, str]) -> str:
        result = self._render(versions)
        self.files.makedirs(self.bundle_dir, 0o700)  # env files hold secrets: nobody else walks in
        changed = bundle.write(result, self.bundle_dir, self.files)
        self._nginx_changed = self._nginx_changed or "nginx/nginx.conf" in changed
        self.files.makedirs(self.bundle_dir / MAINTENANCE_DIR, 0o755)  # mounted into the gateway: must exist
        if self.env.nginx.enabled and self.env.nginx.tls.mode in ("self-signed", "acme"):
            self._self_signed()  # acme: the placeholder nginx starts with, until the CA's certificate comes
        self._database_tls()
        return bundle.digest(result)

    # --- up: the primitives app.up executes the plan with ---------------------------------------------------
    def prepare(self, version: str, *, restart_stores: bool) -> Prepared:
        staged = self.stage(version, restart_stores=restart_stores)
        if staged.nothing:
            return staged
        self._run(self.compose.check(), "compose config")
        hashes = parse_hashes(self._run(self.compose.config_hashes(), "compose config --hash").stdout)
        desired, staged.status = planning.wanted(self, self.rendered(version), hashes, staged.versions)
        staged.plan = plan(desired, self.observe())
        return staged

    def run_phase(self, phase: str, steps: Sequence[Step], prepared: Prepared, *, timeout: float, wait: bool) -> None:
        if phase == "stores":  # started (or recreated, when allowed) every time: compose leaves the rest
            self._stores_restarted = any(s.action == "restart" for s in steps)
            with self.console.status("starting the stores"):
                self._run(self.compose.up(*self.env.stores, timeout=timeout), "starting the stores")
            if self.env.uses_rabbitmq:
                self._hub_users(timeout)
            self._provision(timeout)
        elif phase == "migrate":
            targets = [s.target for s in steps]
            prepared.heads, prepared.backup = self._migrate(prepared.versions, targets, prepared.status or None)
        elif phase == "replace" and steps and not self.env.publish_ports:
            self.rollout.roll([s.target for s in steps], timeout)  # publish_ports: compose recreates them
        elif phase == "converge":
            with self.console.status("starting the services and waiting until healthy"):
                up = self.compose.up(timeout=timeout if wait else None, remove_orphans=True)
                self._run(up, "starting the services")
                if wait:
                    self.rollout.confirm_healthy(timeout)
                    if self._stores_restarted:
                        self.rollout.confirm_fresh(self.health, timeout)
                else:
                    self.rollout.publish_gateways(self.containers(), healthy_only=False)
            if self._nginx_changed:
                self.rollout.reload_nginx()

    def failed(self, prepared: Prepared, error: StartFailed) -> Fallback:
        report = f"{error}\n{self.rollout.failure_report()}"
        note = str(error).splitlines()[0]
        versions, previous = prepared.versions, prepared.previous
        self.record_up(prepared, "failed", note)
        if previous is None or previous.versions == versions:
            raise StartFailed(f"the deploy of {prepared.version} did not become healthy\n{report}") from None
        back = dict(previous.versions)
        digest = self.write_bundle(back)
        hashes = parse_hashes(self._run(self.compose.config_hashes(), "compose config --hash").stdout)
        # The code goes back, the schema stays: the older images run on it (their migrations are not run).
        desired, _ = planning.wanted(self, self._render(back), hashes, back, migrations=False)
        way_back = plan(desired, self.observe())
        return Fallback(report, Prepared(f"release {previous.id}", back, digest, previous, way_back), previous)

    def finish(self, prepared: Prepared, seconds: float) -> list[UnitStatus]:
        self.record_up(prepared, "succeeded", f"{seconds:.1f}s")
        for tag in self.prune_images():
            self.console.info(f"pruned {tag}")
        return self.status()

    def store_hashes(self, version: str) -> dict[str, str]:
        """compose's hash of each store as `version`'s bundle defines it, from a compose file of the stores
        alone written beside the bundle's (the same folder: the same paths) and removed again. Empty when
        nothing was deployed here yet."""
        if self.files.mode(self.bundle_dir / "compose.yml") is None:
            return {}
        probe = self.bundle_dir / STORES_PROBE
        self.files.write_atomic(
            probe, stores_only(self.rendered(version).files["compose.yml"].text, self.env.stores), 0o600
        )
        try:
            done = self._run(self.compose.config_hashes(STORES_PROBE), "compose config --hash")
        finally:
            self.files.unlink(probe)
        return {name: h for name, h in parse_hashes(done.stdout).items() if name in self.env.stores}

    def running_stores(self, states: Sequence[ContainerState] | None = None) -> dict[str, str]:
        """The running stores' hashes, as compose labelled their containers."""
        found = self.containers() if states is None else states
        return {
            c.service: c.config_hash
            for c in found
            if c.service in self.env.stores and c.state == "running" and not c.oneoff and c.config_hash
        }

    def _hub_users(self, timeout: float) -> None:
        container = self._running("rabbitmq", "its services' users cannot be created")
        ctl = Command(("docker", "exec", "-i", container, *eventhub.IMPORT))
        eventhub.create_users(self.runner, ctl, self.secrets, self.console, timeout)

    def _running_container(self, service: str) -> str | None:
        """A running container of `service`, for `docker exec`: never `compose exec` or `compose run`, whose exit
        code is 0 whatever the command did (compose 2.40 on Docker 20.10), which would hide a failure."""
        return next((c.name for c in self.containers() if c.service == service and c.state == "running"), None)

    def _running(self, service: str, why: str) -> str:
        """As _running_container, and refused with a way out when none runs."""
        container = self._running_container(service)
        if container is None:
            start = f"start it with `mfe-deploy up --env {self.env.name}`"
            raise StartFailed(f"{service} of {self.env.name} is not running: {why}; {start}")
        return container

    def _nothing_to_do(self, previous: Release | None, versions: dict[str, str], digest: str) -> bool:
        """The plan is empty when the last good release has this very bundle and these very images, and
        every container it needs runs healthy. Dirty versions are never assumed unchanged."""
        if not self._same_release(previous, versions, digest):
            return False
        states = self.containers()
        expected = {*self.units()}
        running = {c.service for c in states if c.state == "running" and c.health in ("healthy", "")}
        replicas = {name: svc.replicas for name, svc in self.env.services.items()}
        counts = {name: sum(1 for c in states if c.service == name) for name in replicas}
        return (
            expected <= running
            and all(counts[n] == r for n, r in replicas.items())
            and all(c.state == "running" and c.health in ("healthy", "") for c in states)
            and not self.rollout.unpublished(states)
        )

    def migrate(self, services: list[str], action: list[str]) -> list[migrations.Outcome]:
        return migrating.in_containers(self, services, action)

    def schema_status(self, service: str) -> migrations.Outcome:
        container = self._running_container(service) if self.env.services[service].bundled else None
        if container is None:
            (outcome,) = self.migrate([service], ["status"])
            return outcome
        return migrating.status_in_running(self, service, container)

    # --- rollback ------------------------------------------------------------------------------------------
    def roll_back(self, service: str, target: str, timeout: float) -> None:
        if self.env.publish_ports:  # a host port cannot be bound twice: stop, then start
            with self.console.status(f"rolling {service} back to {target}"):
                self._run(self.compose.up(service, timeout=timeout, no_deps=True), f"starting {service} {target}")
                self.rollout.confirm_healthy(timeout)
        else:
            self.rollout.roll([service], timeout)

    def revert(self, current: dict[str, str], service: str, timeout: float) -> None:
        self.write_bundle(current)  # start-first: the old containers still serve, only the files go back
        if self.env.publish_ports:
            self.runner.run(self.compose.up(service, timeout=None, no_deps=True), timeout=timeout)

    def start_older(self, names: list[str], timeout: float) -> None:
        """After a restore for a rollback: the stopped services start again from the bundle just written."""
        self._run(self.compose.up(*names, timeout=timeout, no_deps=True), f"starting {', '.join(names)}")
        self.rollout.confirm_healthy(timeout)

    # --- one-off commands --------------------------------------------------------------------------
    def _one_off_container(self, service: str) -> str:
        if service not in self.env.services:
            raise MfeError(f"unknown service {service!r}; one of: {', '.join(self.env.services)}")
        return self._running(service, "a one-off command runs in one of its containers")

    def run(self, service: str, argv: Sequence[str], *, in_place: bool) -> int:
        """In a running container of the service (run and exec alike here: `compose run` and `compose exec`
        exit 0 whatever the command did, with compose 2.40 on Docker 20.10)."""
        container = self._one_off_container(service)
        return self.runner.attach(commands.run_in(container, argv, tty=_tty()))

    def db_shell(self, service: str, args: Sequence[str]) -> int:
        """psql in the postgres container, over its socket, as the service's role on its database."""
        if service not in self.env.database_services:
            raise MfeError(f"{service} owns no database; those that do: {', '.join(self.env.database_services)}")
        self._one_off_container(service)
        text = self.files.read_text(self.bundle_dir / "env" / f"{service}.env") or ""
        url = parse_env_text(text).get("DATABASE_URL")
        if url is None:
            raise MfeError(f"{service} has no DATABASE_URL in its environment file: run `up --env {self.env.name}`")
        target = psql_target(url)
        postgres = self._running("postgres", "db shell runs psql in it")
        return self.runner.attach(commands.psql_in(postgres, target.user, target.database, args, tty=_tty()))

    def acme_folder(self) -> tuple[Files, PurePath]:
        return self.files, self.bundle_dir / "nginx" / "acme"  # mounted into nginx with its whole folder

    def install_certificate(self, chain: str, key: str) -> None:
        folder = self.bundle_dir / "nginx" / "ssl"
        self.files.write_atomic(folder / "key.pem", key, 0o600)
        self.files.write_atomic(folder / "cert.pem", chain, 0o644)
        self.rollout.reload_nginx()  # copies both for nginx's user, tests, reloads

    def prune_images(self, keep: int = 5) -> list[str]:
        return self.images.prune(keep)

    # --- what backups need ----------------------------------------------------------------------------------
    def postgres(self) -> Postgres:
        @cache  # compose names its containers: the name holds while the project lives
        def find() -> str:
            return self._running("postgres", "its databases cannot be reached")

        return ComposePostgres(find, self.env.database.superuser, self.secrets.postgres_password)

    def stop_services(self, names: Sequence[str]) -> None:
        """The fence of a restore: the schema may change under the images, so the next `up` migrates again."""
        self.forget_migrations()
        with self.console.status(f"stopping {', '.join(names)}"):
            self._run(self.compose.stop(*names), "stopping the services")

    def start_services(self, names: Sequence[str], timeout: float) -> None:
        with self.console.status(f"starting {', '.join(names)} and waiting until healthy"):
            self._run(self.compose.start(*names), "starting the services")
            self.rollout.confirm_healthy(timeout, recovering=True)

    # --- plan and diff ------------------------------------------------------------------------------------
    def desired(self, version: str) -> Desired:
        return planning.desired(self, version)

    def observe(self) -> Observed:
        return planning.observe(self)

    def rendered(self, version: str) -> Bundle:
        """The bundle `up --version VERSION` would write (every service at that version)."""
        return self._render(dict.fromkeys(self.env.services, version))

    # --- observe -------------------------------------------------------------------------------------------
    def containers(self) -> list[ContainerState]:
        if self.files.mode(self.bundle_dir / "compose.yml") is None:
            return []
        done = self.runner.run(self.compose.ps(), timeout=60)
        return parse_ps(done.stdout) if done.returncode == 0 else []

    def health(self) -> dict[str, health.Probe]:
        running = {c.service: c.name for c in reversed(self.containers()) if c.state == "running"}

        def one(service: str) -> health.Probe:
            if service not in running:
                return health.Probe(None, {}, "not running")
            probe = commands.probe_in(running[service], self.env.services[service])
            return parse_probe(self.runner.run(probe, timeout=30))

        names = list(self.env.services)
        with ThreadPoolExecutor(len(names)) as pool:
            return dict(zip(names, pool.map(one, names), strict=True))

    def logs(
        self, unit: str | None, tail: int | None, follow: bool, needle: str | None, write: Callable[[str], None]
    ) -> None:
        proc = self.runner.spawn(self.compose.logs(unit, tail, follow), stderr=sys.stderr.buffer)
        assert proc.stdout is not None
        match = needle.encode() if needle is not None else None
        try:
            for line in iter(proc.stdout.readline, b""):
                if match is not None and match not in line:
                    continue
                write(line.decode(errors="replace").rstrip("\n"))
        finally:
            proc.kill()

    def down(self, *, volumes: bool = False) -> bool:
        if self.files.mode(self.bundle_dir / "compose.yml") is None:
            return False
        running = bool(self.containers())
        with self.console.status("stopping"):
            self._run(self.compose.down(volumes=volumes), "compose down")
        self.forget_migrations()
        if volumes:  # with the data go its keys: the env files, the self-signed key (history stays)
            made = [f"{DB_TLS_DIR}/{name}" for name in ("server.key", "server.crt", "ca.pem")]
            extra = ["nginx/ssl/key.pem", "nginx/ssl/cert.pem", GREEN_FLAG, *made]
            bundle.remove(self.bundle_dir, self.files, extra=extra)
        return running


def _tty() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()
