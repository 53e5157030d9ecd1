"""What every runtime on a Docker Engine shares (docker, swarm): where the release's files and state live,
its images, the certificates made beside the bundle, preparing and recording a release, the migrations
run once per release, and what plan and diff compare. Each runtime adds how it runs the stack (compose
and start-first replacement; a Swarm stack) and composes the other parts (images, rollout, rollbacks,
probes); neither inherits the other."""

from __future__ import annotations

import abc
import hashlib
import json
import secrets
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import cached_property

from mfe_deploy import bundle, tls
from mfe_deploy.backups import pg
from mfe_deploy.backups.jobs import Backups
from mfe_deploy.backups.pg import Postgres
from mfe_deploy.bundle import Drift
from mfe_deploy.compose import ContainerState
from mfe_deploy.config.models import Environment
from mfe_deploy.config.secrets import Secrets
from mfe_deploy.config.urls import DB_TLS_DIR
from mfe_deploy.errors import MfeError
from mfe_deploy.exec.command import Command
from mfe_deploy.exec.host import MIGRATED
from mfe_deploy.exec.process import LocalProcess
from mfe_deploy.exec.runner import Completed, Runner
from mfe_deploy.ops import migrations, schema
from mfe_deploy.plan import Desired, Have, Observed, Plan, Want, digest
from mfe_deploy.render import Bundle, provision_script
from mfe_deploy.runtimes import premigration
from mfe_deploy.runtimes.contract import Deployment, Prepared, StartFailed, UnitStatus, checked, guard_stores, units
from mfe_deploy.runtimes.docker import planning, rollbacks
from mfe_deploy.runtimes.docker.images import EngineImages
from mfe_deploy.state.ledger import Ledger, Release


class EngineRuntime(abc.ABC):
    name: str

    def __init__(self, deployment: Deployment, runner: Runner | None = None) -> None:
        """runner: the engine that runs the stack (default: the deployment's host)."""
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
        self.runner: Runner = runner or self.host.runner
        self.builder = LocalProcess()  # images are built by this machine's engine, then shipped

    # --- what each runtime says for itself ---------------------------------------------------------------
    @abc.abstractmethod
    def containers(self) -> list[ContainerState]:
        """The stack's containers (docker) or tasks (swarm) that should run."""

    @abc.abstractmethod
    def write_bundle(self, versions: dict[str, str]) -> str:
        """The release's files written where the stack runs; their digest."""

    @abc.abstractmethod
    def rendered(self, version: str) -> Bundle:
        """The bundle `up --version VERSION` would write (every service at that version)."""

    @abc.abstractmethod
    def migrate(self, services: list[str], action: list[str]) -> list[migrations.Outcome]: ...

    @abc.abstractmethod
    def schema_status(self, service: str) -> migrations.Outcome: ...

    @abc.abstractmethod
    def postgres(self) -> Postgres: ...

    @abc.abstractmethod
    def stop_services(self, names: Sequence[str]) -> None:
        """The fence of a restore: no write is acknowledged once this returns."""

    @abc.abstractmethod
    def start_services(self, names: Sequence[str], timeout: float) -> None: ...

    @abc.abstractmethod
    def start_older(self, names: list[str], timeout: float) -> None:
        """After a restore for a rollback: the stopped services start again from the bundle just written."""

    @abc.abstractmethod
    def _nothing_to_do(self, previous: Release | None, versions: dict[str, str], digest: str) -> bool: ...

    @abc.abstractmethod
    def store_hashes(self, version: str) -> dict[str, str]: ...

    @abc.abstractmethod
    def running_stores(self, states: Sequence[ContainerState] | None = None) -> dict[str, str]: ...

    # --- shared --------------------------------------------------------------------------------------------
    @cached_property
    def secrets(self) -> Secrets:
        return self._secrets()

    def _run(self, command: Command, what: str, timeout: float = 600) -> Completed:
        return checked(self.runner, command, what, timeout)

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

    def stage(self, version: str, *, restart_stores: bool) -> Prepared:
        """What an `up` on an engine does first: the stores guarded, the images built, the bundle written;
        `nothing` when the running release already is this one. Its plan is the runtime's to compute."""
        self._refuse_pitr()
        self._guard_stores(version, allowed=restart_stores)
        previous = self.ledger.last_good()
        versions: dict[str, str] = dict.fromkeys(self.env.services, version)
        self.build(version)
        digest = self.write_bundle(versions)
        nothing = self._nothing_to_do(previous, versions, digest)
        return Prepared(version, versions, digest, previous, Plan(()), nothing=nothing)

    def _same_release(self, previous: Release | None, versions: dict[str, str], digest: str) -> bool:
        """The last good release has this very bundle and these very images (a dirty version never has):
        what `up` needs to find nothing to do, with every unit running healthy (each runtime's own look)."""
        return (
            previous is not None
            and previous.bundle_sha256 == digest
            and dict(previous.versions) == versions
            and not any(v.endswith("-dirty") for v in versions.values())
            and self.images.ids(versions) == dict(previous.images)
        )

    def _guard_stores(self, version: str, *, allowed: bool) -> None:
        """StoresWouldRestart, before anything changed, when `version`'s bundle changes a running store's
        configuration and the restart is not allowed."""
        guard_stores(
            self.env.name, self.store_hashes(version), self.running_stores(), allowed=allowed, say=self.console.info
        )

    def migration_key(self, versions: dict[str, str]) -> str:
        """Migrations ship in the images: with the same images and the same database container they were
        applied already, and one-off containers (seconds each) can be skipped."""
        pg = [c.name for c in self.containers() if c.service == "postgres"]
        ids = [self.images.ids(versions)[s] for s in self.env.database_services]
        folders = [migrations.folder_digest(self.project_dir, svc) for svc in self.env.services.values()]
        return hashlib.sha256(json.dumps([pg, ids, folders]).encode()).hexdigest()

    def migrated(self, key: str) -> bool:
        """Whether the images and database of this migration key migrated already (one-off containers skipped)."""
        return (self.files.read_text(self.state_dir / MIGRATED) or "").strip() == key

    def forget_migrations(self) -> None:
        """The schema may change under the images (a restore, a down migration, the data gone): the next `up`
        of these images migrates again."""
        self.files.unlink(self.state_dir / MIGRATED)

    def _migrate(
        self,
        versions: dict[str, str],
        services: list[str] | None = None,
        status: list[migrations.Outcome] | None = None,
    ) -> tuple[dict[str, str], str]:
        """The heads each service's migrations reached, and the id of the backup taken just before (or "").
        `services`: those the plan migrates (default: every database service); none once these images
        migrated this database (the key, written after). `status`: the runner's, when the plan asked it."""
        key = self.migration_key(versions)
        if self.migrated(key):
            return {}, ""
        services = self.env.database_services if services is None else services
        heads: dict[str, str] = {}
        backup = ""
        if services:
            backup = premigration.before_migrating(self.env, self.console, self.migrate, services, self.backups, status)
            with self.console.status("applying migrations"):
                outcomes = self.migrate(services, ["apply"])
            failures, heads = migrations.applied(outcomes)
            if failures:
                raise StartFailed("migrations failed: " + "; ".join(failures)) from None
            for line in migrations.describe(outcomes):
                self.console.info(line)
        self.files.write_atomic(self.state_dir / MIGRATED, key + "\n", 0o644)
        return heads, backup

    def backups(self) -> Backups:
        """This environment's backups, kept in the project's backups folder on this machine."""
        state = (self.files, self.state_dir)
        args = (self.console, self.secrets, self.project_dir, state, self.ledger.running())
        return Backups.of(self.env, self.postgres(), self.runner, *args)

    def runner_service(self) -> str:
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

    def record_up(self, prepared: Prepared, outcome: str, note: str) -> None:
        """An `up` of this release in the ledger: its heads and the backup taken before its migrations."""
        versions, heads = prepared.versions, prepared.heads
        self.record("up", outcome, versions, prepared.digest, heads, note=note, backup=prepared.backup)

    def rolled_back(self, back: Prepared, error: StartFailed | None) -> None:
        """A failed up's way back, in the ledger as an automatic rollback (and why it failed, when it did)."""
        note = "" if error is None else str(error).splitlines()[0]
        self.record(
            "auto-rollback", "succeeded" if error is None else "failed", back.versions, back.digest, {}, note=note
        )

    def record(
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

    # --- rollback: the primitives app.rollback runs the use case with ------------------------------------
    def rollback_target(self, service: str, to: str | None) -> tuple[dict[str, str], str]:
        return rollbacks.target(self, service, to)

    def rollback_verdict(self, service: str, target: str) -> schema.Verdict | None:
        return rollbacks.verdict(self, service, target)

    def undo_migrations(self, verdict: schema.Verdict | None, policy: schema.Policy) -> dict[str, str]:
        return rollbacks.schema_first(self, verdict, policy)

    def restore_for_rollback(
        self, verdict: schema.Verdict, current: dict[str, str], versions: dict[str, str], timeout: float
    ) -> Release:
        return rollbacks.restoring(self, verdict, current, versions, timeout)

    @abc.abstractmethod
    def roll_back(self, service: str, target: str, timeout: float) -> None: ...

    @abc.abstractmethod
    def revert(self, current: dict[str, str], service: str, timeout: float) -> None: ...

    def released(self) -> Release:
        return self.ledger.all()[-1]

    def desired(self, version: str) -> Desired:
        return self.wanted(version)[0]

    def wanted(self, version: str) -> tuple[Desired, list[migrations.Outcome]]:
        """What `up --version VERSION` runs: each service's image, replicas and env file; the stores'
        definitions; the migrations these images run (the runner's status with it, when it was asked)."""
        versions = dict.fromkeys(self.env.services, version)
        pending_ids, status = planning.migrations_to_run(self, versions)
        return Desired(
            self.wants(self.rendered(version), versions), pending_ids, stores=self.store_hashes(version)
        ), status

    def wants(self, result: Bundle, versions: dict[str, str]) -> dict[str, Want]:
        """Each service as this bundle of these versions runs it: image, replicas, env file."""
        return {
            name: Want(
                self.images.tag(name, versions[name]), svc.replicas, digest(result.files[f"env/{name}.env"].text) or ""
            )
            for name, svc in self.env.services.items()
        }

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
        return Observed(haves, stores=self.running_stores(states))

    def drift(self, version: str) -> list[Drift]:
        return bundle.drift(self.rendered(version), self.bundle_dir, self.files)

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

    def nginx_certificate(self) -> str | None:
        return self.files.read_text(self.bundle_dir / "nginx" / "ssl" / "cert.pem")

    def point_in_time(self) -> None:
        """database.pitr runs on the local runtime in this release: `up` refuses it here (_refuse_pitr)."""
        return None

    def _refuse_pitr(self) -> None:
        if self.env.database.pitr is not None:
            raise MfeError(
                f"environments/{self.env.name}.yaml: database.pitr: point-in-time recovery runs on the local "
                f"runtime in this release, not on {self.name}: remove it, or deploy with --runtime local"
            )

    def units(self) -> list[str]:
        return units(self.env)


def _is_key(name: str) -> bool:
    return name.endswith((".key", "key.pem"))
