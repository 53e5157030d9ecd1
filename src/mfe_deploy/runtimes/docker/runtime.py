"""The docker runtime: the rendered bundle driven by Compose v2 on a Docker Engine."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache, cached_property
from pathlib import PurePath

from mfe_deploy import bundle, tls
from mfe_deploy.backups import jobs, pg
from mfe_deploy.backups.jobs import Backups
from mfe_deploy.backups.offsite import for_env
from mfe_deploy.backups.pg import ComposePostgres, Postgres
from mfe_deploy.backups.store import Store
from mfe_deploy.bundle import Drift
from mfe_deploy.compose import (
    STORES_PROBE,
    Compose,
    ContainerState,
    find,
    parse_hashes,
    parse_ps,
    stores_only,
)
from mfe_deploy.config import urls
from mfe_deploy.config.models import Environment
from mfe_deploy.config.secrets import Secrets
from mfe_deploy.config.urls import DB_TLS_DIR
from mfe_deploy.engine import capabilities, capabilities_for, version_via
from mfe_deploy.errors import MfeError
from mfe_deploy.exec.command import Command
from mfe_deploy.exec.host import Files
from mfe_deploy.exec.process import LocalProcess
from mfe_deploy.exec.runner import Completed
from mfe_deploy.exec.withenv import parse_env_text
from mfe_deploy.ops import health, migrations, schema
from mfe_deploy.ops.migrations import pending
from mfe_deploy.plan import Desired, Have, Observed, Want, digest
from mfe_deploy.render import (
    ENV_IN_CONTAINER,
    GREEN_FLAG,
    MAINTENANCE_DIR,
    SERVICE_UID,
    SOURCE_ENV,
    Bundle,
    Capabilities,
    provision_script,
    render,
)
from mfe_deploy.runtimes import eventhub, premigration
from mfe_deploy.runtimes.contract import (
    Deployment,
    Features,
    Node,
    RolledBack,
    StartFailed,
    UnitStatus,
    Unsupported,
    checked,
    guard_stores,
)
from mfe_deploy.runtimes.docker.images import EngineImages
from mfe_deploy.runtimes.docker.probes import parse_probe, probe_command
from mfe_deploy.runtimes.docker.rollout import Rollout
from mfe_deploy.runtimes.oneoff import psql_target
from mfe_deploy.state.ledger import Ledger, Release


class DockerRuntime:
    name = "docker"

    def __init__(self, deployment: Deployment) -> None:
        self.project_dir = deployment.project_dir
        self.env: Environment = deployment.loaded.env
        self._secrets = deployment.secrets
        self.console = deployment.console
        self.host = deployment.host
        self.local_dir = (self.project_dir / ".mfe" / self.env.name).resolve()  # build context, on this machine
        self.bundle_dir = self.host.root
        self.state_dir = self.host.state
        self.files = self.host.files
        self.ledger = Ledger.of(self.host)
        self.runner = self.host.runner
        self.builder = LocalProcess()  # images are built by this machine's engine, then shipped
        self._compose: Compose | None = None
        self._nginx_changed = False  # nginx.conf was rewritten by this command: nginx must reload

    @cached_property
    def secrets(self) -> Secrets:
        return self._secrets()

    @property
    def features(self) -> Features:
        return Features(versioned_images=True, remote=self.host.remote)

    @cached_property
    def capabilities(self) -> Capabilities:
        """What the engine that runs the stack supports (asked once per command)."""
        return capabilities_for(version_via(self.runner)) if self.host.remote else capabilities(None)

    @property
    def compose(self) -> Compose:
        if self._compose is None:
            self._compose = Compose(find(self.runner if self.host.remote else None), self.bundle_dir)
        return self._compose

    def _run(self, command: Command, what: str, timeout: float = 600) -> Completed:
        return checked(self.runner, command, what, timeout)

    # --- versions and images ---------------------------------------------------------------------------
    def current_versions(self) -> dict[str, str]:
        good = self.ledger.last_good()
        return dict(good.versions) if good else {}

    @cached_property
    def images(self) -> EngineImages:
        """Built here, sent to the engine that runs the stack, pruned there."""
        build_dir = self.local_dir / "build"
        return EngineImages(
            self.env, self.project_dir, build_dir, self.builder, self.runner, self.host, self.console, self.ledger
        )

    def build(self, version: str) -> None:
        self.images.build(version)

    @cached_property
    def rollout(self) -> Rollout:
        """Start-first replacement on this engine (compose is found when first needed)."""
        return Rollout(self.env, self.compose, self.runner, self.files, self.bundle_dir, self.console, self.containers)

    # --- rendering -----------------------------------------------------------------------------------------
    def write_bundle(self, versions: dict[str, str]) -> str:
        result = render(self.env, self.secrets, versions=versions, caps=self.capabilities)
        self.files.makedirs(self.bundle_dir, 0o700)  # env files hold secrets: nobody else walks in
        changed = bundle.write(result, self.bundle_dir, self.files)
        self._nginx_changed = self._nginx_changed or "nginx/nginx.conf" in changed
        self.files.makedirs(self.bundle_dir / MAINTENANCE_DIR, 0o755)  # mounted into the gateway: must exist
        if self.env.nginx.enabled and self.env.nginx.tls.mode in ("self-signed", "acme"):
            self._self_signed()  # acme: the placeholder nginx starts with, until the CA's certificate comes
        self._database_tls()
        return bundle.digest(result)

    def _self_signed(self) -> None:
        pair = ("cert.pem", "key.pem")
        self._made_once("nginx/ssl", pair, lambda: dict(zip(pair, tls.self_signed(self.env.nginx.domain), strict=True)))

    def _database_tls(self) -> None:
        """database.tls: the CA, certificate and key PostgreSQL serves TLS with (the services' verify-full
        checks the name they dial, `postgres`)."""
        if self.env.database_tls:
            names = ("ca.pem", "server.crt", "server.key")
            self._made_once(DB_TLS_DIR, names, lambda: tls.database_set(["postgres", "localhost", "127.0.0.1"]))

    def _made_once(self, folder: str, names: tuple[str, ...], make: Callable[[], dict[str, str]]) -> None:
        """Certificates and keys beside the bundle, made when one of `names` is missing and kept after: the
        keys (*.key, key.pem) first and 0600 (a folder they create is 0700), the rest 0644."""
        where = self.bundle_dir / folder
        if all(self.files.mode(where / name) is not None for name in names):
            return
        for name, text in sorted(make().items(), key=lambda item: not _is_key(item[0])):
            self.files.write_atomic(where / name, text, 0o600 if _is_key(name) else 0o644)

    # --- up ------------------------------------------------------------------------------------------------
    def _prepared(self, version: str) -> tuple[Release | None, dict[str, str], str] | None:
        """Build the images and write the bundle of `version`: the last good release, the versions and the
        bundle's digest, or None when the running release already is this one (and that is said)."""
        previous = self.ledger.last_good()
        versions: dict[str, str] = dict.fromkeys(self.env.services, version)
        self.build(version)
        digest = self.write_bundle(versions)
        if self._nothing_to_do(previous, versions, digest):
            self.console.info(
                "nothing to do: the running release already matches (same files, same images, all healthy)"
            )
            return None
        return previous, versions, digest

    def up(self, *, wait: bool, timeout: float, version: str = "dev", restart_stores: bool = False) -> list[UnitStatus]:
        if self.env.database.pitr is not None:
            raise MfeError(
                f"environments/{self.env.name}.yaml: database.pitr: point-in-time recovery runs on the local "
                f"runtime in this release, not on {self.name}: remove it, or deploy with --runtime local"
            )
        started = time.monotonic()
        self._guard_stores(version, allowed=restart_stores)
        prepared = self._prepared(version)
        if prepared is None:
            return self.status()
        previous, versions, digest = prepared
        self._run(self.compose.check(), "compose config")
        stores = self.env.stores
        with self.console.status("starting the stores"):
            self._run(self.compose.up(*stores, timeout=timeout), "starting the stores")
        if self.env.uses_rabbitmq:
            self._hub_users(timeout)
        self._provision(timeout)
        heads, backup = self._migrate(versions)
        try:
            self.rollout.roll(self.rollout.stale(), timeout)
            with self.console.status("starting the services and waiting until healthy"):
                up = self.compose.up(timeout=timeout if wait else None, remove_orphans=True)
                self._run(up, "starting the services")
                if wait:
                    self.rollout.confirm_healthy(timeout)
                else:
                    self.rollout.publish_gateways(self.containers(), healthy_only=False)
            if self._nginx_changed:
                self.rollout.reload_nginx()
        except StartFailed as exc:
            report = f"{exc}\n{self.rollout.failure_report()}"
            self._record("up", "failed", versions, digest, heads, note=str(exc).splitlines()[0], backup=backup)
            if previous is not None and previous.versions != versions:
                self.console.info(f"rolling back to release {previous.id} ({_fmt(dict(previous.versions))})")
                self._restore(dict(previous.versions), timeout, kind="auto-rollback")
                raise RolledBack(
                    f"the deploy of {version} did not become healthy and was rolled back to release "
                    f"{previous.id}\n{report}"
                ) from None
            raise StartFailed(f"the deploy of {version} did not become healthy\n{report}") from None
        note = f"{time.monotonic() - started:.1f}s"
        self._record("up", "succeeded", versions, digest, heads, note=note, backup=backup)
        for tag in self.prune_images():
            self.console.info(f"pruned {tag}")
        return self.status()

    def _guard_stores(self, version: str, *, allowed: bool) -> None:
        """StoresWouldRestart, before anything changed, when `version`'s bundle changes a running store's
        configuration and the restart is not allowed."""
        guard_stores(
            self.env.name, self._store_hashes(version), self._running_stores(), allowed=allowed, say=self.console.info
        )

    def _store_hashes(self, version: str) -> dict[str, str]:
        """compose's hash of each store as `version`'s bundle defines it, from a compose file of the stores
        alone written beside the bundle's (the same folder: the same paths) and removed again. Empty when
        nothing was deployed here yet."""
        if self.files.mode(self.bundle_dir / "compose.yml") is None:
            return {}
        probe = self.bundle_dir / STORES_PROBE
        self.files.write_atomic(
            probe, stores_only(self._rendered(version).files["compose.yml"].text, self.env.stores), 0o600
        )
        try:
            done = self._run(self.compose.config_hashes(STORES_PROBE), "compose config --hash")
        finally:
            self.files.unlink(probe)
        return {name: h for name, h in parse_hashes(done.stdout).items() if name in self.env.stores}

    def _running_stores(self, states: Sequence[ContainerState] | None = None) -> dict[str, str]:
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

    def _restore(self, versions: dict[str, str], timeout: float, kind: str) -> None:
        digest = self.write_bundle(versions)
        try:
            self.rollout.roll(self.rollout.stale(), timeout)
            self._run(self.compose.up(timeout=timeout), kind)
            self.rollout.confirm_healthy(timeout)
            if self._nginx_changed:
                self.rollout.reload_nginx()
            self._record(kind, "succeeded", versions, digest, {})
        except StartFailed as exc:
            self._record(kind, "failed", versions, digest, {}, note=str(exc).splitlines()[0])
            raise

    def _nothing_to_do(self, previous: Release | None, versions: dict[str, str], digest: str) -> bool:
        """The plan is empty when the last good release has this very bundle and these very images, and
        every container it needs runs healthy. Dirty versions are never assumed unchanged."""
        if previous is None or previous.bundle_sha256 != digest or dict(previous.versions) != versions:
            return False
        if any(v.endswith("-dirty") for v in versions.values()):
            return False
        if self.images.ids(versions) != dict(previous.images):
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

    def _migration_key(self, versions: dict[str, str]) -> str:
        """Migrations ship in the images: with the same images and the same database container they were
        applied already, and one-off containers (seconds each) can be skipped."""
        pg = [c.name for c in self.containers() if c.service == "postgres"]
        ids = [self.images.ids(versions)[s] for s in self.env.database_services]
        folders = [migrations.folder_digest(self.project_dir, svc) for svc in self.env.services.values()]
        return hashlib.sha256(json.dumps([pg, ids, folders]).encode()).hexdigest()

    def _migrate(self, versions: dict[str, str]) -> tuple[dict[str, str], str]:
        """The heads each service's migrations reached, and the id of the backup taken just before (or "")."""
        marker = self.state_dir / "migrated"
        key = self._migration_key(versions)
        if (self.files.read_text(marker) or "").strip() == key:
            return {}, ""
        services = self.env.database_services
        backup = premigration.before_migrating(self.env, self.console, self.migrate, services, self.backups)
        with self.console.status("applying migrations"):
            outcomes = self.migrate(self.env.database_services, ["apply"])
        failures, heads = migrations.applied(outcomes)
        if failures:
            raise StartFailed("migrations failed: " + "; ".join(failures)) from None
        for line in migrations.describe(outcomes):
            self.console.info(line)
        self.files.write_atomic(marker, key + "\n", 0o644)
        return heads, backup

    def backups(self) -> Backups:
        """This environment's backups, kept in the project's backups folder on this machine."""
        good = self.ledger.last_good()
        release = {"id": good.id, "time": good.time, "versions": dict(good.versions)} if good else None
        store = Store.of(self.project_dir, self.env)
        passphrase = self.secrets.backup_passphrase
        offsite = for_env(self.env, self.secrets, self.project_dir, (self.files, self.state_dir))
        return Backups(self.env, self.postgres(), self.runner, store, self.console, passphrase, release, offsite)

    def migrate(self, services: list[str], action: list[str]) -> list[migrations.Outcome]:
        """The migration runner in one-off containers of the running images (it ships with them)."""

        def one(service: str) -> migrations.Outcome:
            base = ["-m", "mfe_services.migrate", "--service", service, "--env-name", self.env.name]
            runner = [*base, *action]
            svc = self.env.services[service]
            if svc.bundled:
                # The service's own container, as root only until the runner has read its mounted env file.
                secret = ["--env-file", ENV_IN_CONTAINER, "--user", SERVICE_UID]
                cmd = self.compose.run_once(service, "python3", *base, *secret, *action)
                return migrations.parse(service, self.runner.run(cmd, timeout=600))
            if svc.migrations is None:
                return migrations.Outcome(service, True, {"applied": [], "migrations": [], "pending": []})
            # Your image need not hold the runner: it runs in a one-off container of a bundled image
            # (on the same networks), with your folder mounted and your database's URL.
            host_folder = self.files_for_migrations(service)
            url = urls.database_url(self.env, self.secrets, service, "postgres", 5432)
            cmd = self.compose.run_once(
                self._runner_service(),
                "python3",
                *runner,
                mounts=[f"{host_folder}:/run/mfe/migrations:ro"],
                env=["MFE_MIGRATIONS_FOLDER=/run/mfe/migrations", "DATABASE_URL"],
            )
            cmd = dataclasses.replace(cmd, env={**cmd.env, "DATABASE_URL": url})
            return migrations.parse(service, self.runner.run(cmd, timeout=600))

        # The first one-off container creates the project's networks; concurrent first runs would each
        # create their own (Docker allows duplicate names), so the rest follow it in parallel.
        first = one(services[0])
        with ThreadPoolExecutor(3) as pool:
            return [first, *pool.map(one, services[1:])]

    def _runner_service(self) -> str:
        """A bundled service on the data network: its image holds the migration runner."""
        found = [n for n, s in self.env.services.items() if s.bundled and s.database]
        if not found:
            raise StartFailed("migrations of your services run in a bundled service's image: this environment has none")
        return found[0]

    def files_for_migrations(self, service: str) -> str:
        """Where the service's migrations folder is on the engine's machine (sent there for a remote host)."""
        svc = self.env.services[service]
        assert svc.migrations is not None
        local = (self.project_dir / svc.migrations.path).resolve()
        if not self.host.remote:
            return str(local)
        there = self.bundle_dir / "migrations" / service
        self.files.makedirs(there, 0o755)
        for path in sorted(local.glob("*.sql")):
            self.files.write_atomic(there / path.name, path.read_bytes(), 0o644)
        return str(there)

    def _provision(self, timeout: float) -> None:
        """Every up, once PostgreSQL answers: a database service added since the cluster was made gets its role
        and database (the image's init script runs on an empty cluster only). The script holds passwords: it
        goes to psql on its standard input, never in an argv or an environment."""
        import secrets
        import tempfile

        if not self.env.database_services:
            return
        script = provision_script(self.env, self.secrets, f"mfe_{secrets.token_hex(6)}")
        deadline = time.monotonic() + timeout
        while True:
            with tempfile.TemporaryFile() as errors:
                session = self.runner.spawn(pg.session(self.postgres(), "postgres"), stdin=True, stderr=errors)
                assert session.stdin is not None
                try:
                    session.stdin.write(script.reveal().encode())
                    session.stdin.close()
                except BrokenPipeError:
                    pass
                code = session.wait(timeout=120)
                errors.seek(0)
                tail = (errors.read().decode(errors="replace").strip().splitlines() or ["no error output"])[-1]
            if code == 0:
                return
            if "the database system is starting up" not in tail or time.monotonic() > deadline:
                raise StartFailed(f"creating the roles and databases of new services failed: {tail}")
            time.sleep(1)

    def _record(
        self,
        kind: str,
        outcome: str,
        versions: dict[str, str],
        digest: str,
        heads: dict[str, str],
        note: str = "",
        backup: str = "",
    ) -> None:
        self.ledger.append(
            kind,
            outcome,
            versions,
            images=self.images.ids(versions),
            bundle_sha256=digest,
            migrations=heads,
            note=note,
            backup=backup,
        )

    # --- rollback ------------------------------------------------------------------------------------------
    def _rollback_target(self, service: str, to: str | None) -> tuple[dict[str, str], str]:
        """The versions running now and the one `service` goes back to (refused with a reason)."""
        current = self.current_versions()
        if service not in self.env.services:
            raise MfeError(f"unknown service {service!r}; one of: {', '.join(self.env.services)}")
        prebuilt = self.env.services[service].image
        if prebuilt is not None:
            raise MfeError(f"{service} runs the prebuilt image {prebuilt}: to go back, change it in the environment")
        if not current:
            raise MfeError(f"no successful release of {self.env.name} yet: nothing to roll back")
        target = to or self.ledger.previous_version(service, current[service])
        if target is None:
            raise MfeError(f"{service} has no previous version in the release ledger (it runs {current[service]})")
        if not self.images.exists(service, target):
            where = "this engine" if not self.host.remote else f"the engine of {self.host.name}"
            raise MfeError(f"image {self.images.tag(service, target)} does not exist on {where}")
        return current, target

    def rollback_plan(self, service: str, to: str | None) -> schema.RollbackPlan:
        current, target = self._rollback_target(service, to)
        return schema.RollbackPlan(service, current[service], target, self._verdict(service, target))

    def _verdict(self, service: str, target: str) -> schema.Verdict | None:
        """What rolling `service` back to `target` meets in the schema: the migrations applied since it ran
        that are not compatible with older code (read by the running image's runner). None: not checked
        (no database, or a ledger that never recorded a head)."""
        if service not in self.env.database_services:
            return None
        releases = self.ledger.all()
        known, head = schema.head_of(releases, service, target)
        if not known:
            self.console.warn(f"{service}: the ledger has no schema head for {target}: the schema is not checked")
            return None
        with self.console.status(f"{service}: checking the migrations applied since {target} ran"):
            (outcome,) = self.migrate([service], ["status"])
        if not outcome.ok:
            raise MfeError(f"{service}: cannot read its migrations to check the rollback: {outcome.error}")
        rows = outcome.data.get("migrations", [])
        blocking = schema.blockers(rows, head)
        backup, _ = schema.backup_for(releases, service, target)
        return schema.Verdict(
            service, target, head, tuple(blocking), tuple(schema.without_down(rows, blocking)), backup
        )

    def _schema_first(self, verdict: schema.Verdict | None, policy: schema.Policy) -> dict[str, str]:
        """Refuse, or undo the migrations in the way (policy down) before any code moves; the heads the
        rollback leaves (for the ledger)."""
        if verdict is None or policy == "ignore":
            return {}
        why = verdict.refusal(policy)
        if why is not None:
            raise MfeError(why)
        if not verdict.blocking or policy != "down":
            return {}
        self.files.unlink(self.state_dir / "migrated")  # the next `up` of these images migrates again
        with self.console.status(f"{verdict.service}: undoing the migrations applied since {verdict.head}"):
            (outcome,) = self.migrate([verdict.service], ["down", "--to", verdict.head or "none"])
        if not outcome.ok:
            undone = [u["id"] for u in (outcome.data.get("error") or {}).get("undone", [])]
            done = f" ({', '.join(undone)} undone before it)" if undone else ""
            why = f"{verdict.service}: a down migration failed{done}; the code was not rolled back"
            raise MfeError(f"{why}: {outcome.error}")
        for item in outcome.data.get("undone", []):
            self.console.info(f"{verdict.service}: undid {item['id']} ({item['duration_ms']} ms)")
        return {verdict.service: verdict.head or ""}

    def rollback(
        self, service: str, to: str | None, timeout: float, *, schema_policy: schema.Policy = "check"
    ) -> Release:
        current, target = self._rollback_target(service, to)
        verdict = None if schema_policy == "ignore" else self._verdict(service, target)
        versions = {**current, service: target}
        if verdict is not None and verdict.blocking and schema_policy == "restore":
            return self._rollback_restoring(verdict, current, versions, timeout)
        heads = self._schema_first(verdict, schema_policy)
        digest = self.write_bundle(versions)
        try:
            if self.env.publish_ports:  # a host port cannot be bound twice: stop, then start (see _stale)
                with self.console.status(f"rolling {service} back to {target}"):
                    self._run(self.compose.up(service, timeout=timeout, no_deps=True), f"starting {service} {target}")
                    self.rollout.confirm_healthy(timeout)
            else:
                self.rollout.roll([service], timeout)
        except StartFailed:
            self._record("rollback", "failed", versions, digest, heads)
            self.write_bundle(current)  # start-first: the old containers still serve, only the files go back
            if self.env.publish_ports:
                self.runner.run(self.compose.up(service, timeout=None, no_deps=True), timeout=timeout)
            raise
        note = f"{service}: {current[service]} -> {target}"
        self._record("rollback", "succeeded", versions, digest, heads, note=note)
        return self.ledger.all()[-1]

    def _start_older(self, names: list[str], timeout: float) -> None:
        """After a restore for a rollback: the stopped services start again from the bundle just written."""
        self._run(self.compose.up(*names, timeout=timeout, no_deps=True), f"starting {', '.join(names)}")
        self.rollout.confirm_healthy(timeout)

    def _rollback_restoring(
        self, verdict: schema.Verdict, current: dict[str, str], versions: dict[str, str], timeout: float
    ) -> Release:
        """Stop the service (no write is acknowledged from here on), take a pre-restore backup, restore the
        backup `up` took just before the migrations in the way, then start the older code on it."""
        assert verdict.backup is not None
        service, target = verdict.service, verdict.target
        backups = self.backups()
        entry = backups.store.get(verdict.backup)
        assert entry.manifest is not None
        digest = ""

        def start_older(names: list[str]) -> None:
            nonlocal digest
            digest = self.write_bundle(versions)
            with self.console.status(f"starting {service} {target} on the restored database"):
                self._start_older(names, timeout)

        try:
            done = jobs.restore(backups, entry, service, self, timeout, then=start_older)
        except StartFailed as exc:
            self._record("rollback", "failed", versions, digest, {service: verdict.head or ""})
            why = f"{service}: its database is restored from {entry.id}, but {target} did not start"
            raise StartFailed(f"{why}: {exc}") from None
        pre = backups.store.get(done.pre_restore).manifest
        assert pre is not None
        gone = jobs.lost(entry.manifest.databases[service], pre.databases[service])
        self.console.info(
            f"{service}: restored backup {entry.id} (taken {entry.manifest.finished_at}, before "
            f"{', '.join(verdict.blocking)}); lost since then: {'; '.join(gone) if gone else 'no rows'}; "
            f"the data as it was before this rollback is in backup {done.pre_restore}"
        )
        note = f"{service}: {current[service]} -> {target}, restored {entry.id}, lost: {'; '.join(gone) or 'none'}"
        self._record("rollback", "succeeded", versions, digest, {service: verdict.head or ""}, note=note)
        return self.ledger.all()[-1]

    def nodes(self) -> list[Node]:
        raise Unsupported(f"the {self.name} runtime runs on one host: nodes are a swarm's (runtime: swarm)")

    def set_availability(self, node: str, availability: str, timeout: float) -> None:
        raise Unsupported(f"the {self.name} runtime runs on one host: nodes are a swarm's (runtime: swarm)")

    # --- one-off commands --------------------------------------------------------------------------
    def _one_off_container(self, service: str) -> str:
        if self.host.remote:
            raise Unsupported(f"one-off commands on a remote host ({self.host.name}) are not there yet")
        if service not in self.env.services:
            raise MfeError(f"unknown service {service!r}; one of: {', '.join(self.env.services)}")
        return self._running(service, "a one-off command runs in one of its containers")

    @staticmethod
    def _streams() -> tuple[str, ...]:
        return ("-i", "-t") if sys.stdin.isatty() and sys.stdout.isatty() else ("-i",)

    def run(self, service: str, argv: Sequence[str], *, in_place: bool) -> int:
        """In a running container of the service (run and exec alike here: `compose run` and `compose exec`
        exit 0 whatever the command did, with compose 2.40 on Docker 20.10): its variables sourced from the
        mounted env file inside the container, then the command as the service's user."""
        container = self._one_off_container(service)
        uid, gid = SERVICE_UID.split(":")
        # HOME: root's, closed to the service's user (libpq looks there for a client certificate).
        script = f'{SOURCE_ENV}; HOME=/tmp exec setpriv --reuid={uid} --regid={gid} --clear-groups "$@"'
        argv_ = ["docker", "exec", *self._streams(), "--user", "0", container, "sh", "-c", script, "sh", *argv]
        return self.runner.attach(Command(tuple(argv_)))

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
        socket_dir = "/var/run/postgresql"
        argv = ["docker", "exec", *self._streams(), "--user", "postgres", postgres, "psql", "-h", socket_dir]
        argv += ["-U", target.user, "-d", target.database, *args]
        return self.runner.attach(Command(tuple(argv)))

    def acme_folder(self) -> tuple[Files, PurePath]:
        return self.files, self.bundle_dir / "nginx" / "acme"  # mounted into nginx with its whole folder

    def nginx_certificate(self) -> str | None:
        return self.files.read_text(self.bundle_dir / "nginx" / "ssl" / "cert.pem")

    def install_certificate(self, chain: str, key: str) -> None:
        folder = self.bundle_dir / "nginx" / "ssl"
        self.files.write_atomic(folder / "key.pem", key, 0o600)
        self.files.write_atomic(folder / "cert.pem", chain, 0o644)
        self.rollout.reload_nginx()  # copies both for nginx's user, tests, reloads

    def point_in_time(self) -> None:
        """database.pitr runs on the local runtime in this release: `up` refuses it here."""
        return None

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
        self.files.unlink(self.state_dir / "migrated")
        with self.console.status(f"stopping {', '.join(names)}"):
            self._run(self.compose.stop(*names), "stopping the services")

    def start_services(self, names: Sequence[str], timeout: float) -> None:
        with self.console.status(f"starting {', '.join(names)} and waiting until healthy"):
            self._run(self.compose.start(*names), "starting the services")
            self.rollout.confirm_healthy(timeout, recovering=True)

    # --- plan and diff ------------------------------------------------------------------------------------
    def desired(self, version: str) -> Desired:
        result = self._rendered(version)
        wants = {
            name: Want(self.images.tag(name, version), svc.replicas, digest(result.files[f"env/{name}.env"].text) or "")
            for name, svc in self.env.services.items()
        }
        running = any(c.service == "postgres" and c.state == "running" for c in self.containers())
        pending_ids = pending(self.migrate(self.env.database_services, ["status"])) if running else {}
        return Desired(wants, pending_ids, stores=self._store_hashes(version))

    def observe(self) -> Observed:
        by_service: dict[str, list[ContainerState]] = {}
        states = self.containers()
        for c in states:
            by_service.setdefault(c.service, []).append(c)
        haves = {}
        for name, found in by_service.items():
            running = [c for c in found if c.state == "running"]
            config = digest(self.files.read_text(self.bundle_dir / "env" / f"{name}.env"))
            unhealthy = sum(1 for c in running if c.health == "unhealthy")
            haves[name] = Have((running or found)[0].image, len(running), config, unhealthy)
        return Observed(haves, stores=self._running_stores(states))

    def drift(self, version: str) -> list[Drift]:
        return bundle.drift(self._rendered(version), self.bundle_dir, self.files)

    def _rendered(self, version: str) -> Bundle:
        """The bundle `up --version VERSION` would write (every service at that version)."""
        versions = dict.fromkeys(self.env.services, version)
        return render(self.env, self.secrets, versions=versions, caps=self.capabilities)

    # --- observe -------------------------------------------------------------------------------------------
    def containers(self) -> list[ContainerState]:
        if self.files.mode(self.bundle_dir / "compose.yml") is None:
            return []
        done = self.runner.run(self.compose.ps(), timeout=60)
        return parse_ps(done.stdout) if done.returncode == 0 else []

    def status(self) -> list[UnitStatus]:
        by_service: dict[str, list[ContainerState]] = {}
        for c in self.containers():
            by_service.setdefault(c.service, []).append(c)
        rows = []
        for unit in self.units():
            found = by_service.get(unit, [])
            if not found:
                rows.append(UnitStatus(unit, "STOPPED", None, "-", "down"))
                continue
            for c in found:
                version = c.image.rsplit(":", 1)[-1] if unit in self.env.services else "-"
                verdict = c.health or ("healthy" if c.state == "running" else "down")
                rows.append(UnitStatus(unit, c.state.upper(), c.name, version, verdict))
        return rows

    def health(self) -> dict[str, health.Probe]:
        running = {c.service: c.name for c in reversed(self.containers()) if c.state == "running"}

        def one(service: str) -> health.Probe:
            if service not in running:
                return health.Probe(None, {}, "not running")
            # As the service's user: a bundled service's container starts as root (to read its env file).
            argv = (
                "docker",
                "exec",
                "--user",
                SERVICE_UID,
                running[service],
                *probe_command(self.env.services[service]),
            )
            return parse_probe(self.runner.run(Command(argv), timeout=30))

        names = list(self.env.services)
        with ThreadPoolExecutor(len(names)) as pool:
            return dict(zip(names, pool.map(one, names), strict=True))

    def units(self) -> list[str]:
        stores = self.env.stores
        return [*stores, *self.env.services, *(["nginx"] if self.env.nginx.enabled else [])]

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
        self.files.unlink(self.state_dir / "migrated")
        if volumes:  # with the data go its keys: the env files, the self-signed key (history stays)
            made = [f"{DB_TLS_DIR}/{name}" for name in ("server.key", "server.crt", "ca.pem")]
            extra = ["nginx/ssl/key.pem", "nginx/ssl/cert.pem", GREEN_FLAG, *made]
            bundle.remove(self.bundle_dir, self.files, extra=extra)
        return running


def _is_key(name: str) -> bool:
    return name.endswith((".key", "key.pem"))


def _fmt(versions: dict[str, str]) -> str:
    distinct = set(versions.values())
    return next(iter(distinct)) if len(distinct) == 1 else ", ".join(f"{k}={v}" for k, v in versions.items())
