"""The local runtime: the stack as supervised processes on this machine (supervisord drives them)."""

from __future__ import annotations

import dataclasses
import shutil
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import cached_property
from pathlib import PurePath

from mfe_deploy import bundle
from mfe_deploy.backups.jobs import Backups
from mfe_deploy.backups.pg import LocalPostgres
from mfe_deploy.binaries import Binaries, discover, pin, pinned
from mfe_deploy.bundle import Drift
from mfe_deploy.config.models import Environment
from mfe_deploy.config.secrets import Secrets
from mfe_deploy.errors import MfeError
from mfe_deploy.exec.command import Command
from mfe_deploy.exec.host import Files, LocalFiles, write_atomic
from mfe_deploy.exec.host import local as local_host
from mfe_deploy.exec.process import LocalProcess
from mfe_deploy.local_bundle import (
    LocalLayout,
    acme_folder,
    nginx_unprivileged,
    render_local,
)
from mfe_deploy.ops import health, migrations
from mfe_deploy.ops.migrations import pending
from mfe_deploy.plan import Desired, Have, Observed, Step, Want, digest, plan
from mfe_deploy.render import Bundle, Capabilities, Endpoints, environments, render
from mfe_deploy.runtimes import eventhub, premigration
from mfe_deploy.runtimes.contract import (
    Deployment,
    Fallback,
    Prepared,
    StartFailed,
    UnitStatus,
    guard_stores,
    units,
)
from mfe_deploy.runtimes.local import databases, deploying, logs, machine, observe, oneoff, prepare, supervisord
from mfe_deploy.runtimes.pointintime import LocalPointInTime
from mfe_deploy.state.ledger import Ledger
from mfe_deploy.supervisor import ProgramState, program_fingerprints


class LocalRuntime:
    name = "local"

    lacks = {
        "Rollbacks": "rollback needs versioned images: it works on the docker runtime",
        "Nodes": "the local runtime runs on one host: nodes are a swarm's (runtime: swarm)",
        "Images": "images live on the docker runtime",
    }

    def __init__(self, deployment: Deployment) -> None:
        self.env: Environment = deployment.loaded.env
        self._secrets = deployment.secrets
        self.console = deployment.console
        self.project_dir = deployment.project_dir
        bundle_dir = (deployment.project_dir / ".mfe" / self.env.name).resolve()
        self.layout = LocalLayout(bundle_dir, machine.pg_outside(bundle_dir) if machine.as_root() else None)
        self.runner = LocalProcess()
        self.ledger = Ledger.of(local_host(self.project_dir, self.env.name))
        self._seed = False  # recover: the cluster comes from the offsite WAL (seed_from_offsite)

    @cached_property
    def secrets(self) -> Secrets:
        return self._secrets()

    # --- supervisord -------------------------------------------------------------------------------
    def bins(self) -> Binaries:
        bins = self._found()
        if machine.as_root() and machine.private_above(bins.pg_bin):
            return dataclasses.replace(bins, pg_bin=machine.shared_pg_install(bins.pg_bin))
        return bins

    def _found(self) -> Binaries:
        """Discovered, the binaries this deployment's stores run with first (binaries.pinned)."""
        return discover(
            pinned(machine.read_text(self.layout.binaries)),
            rabbitmq=self.env.uses_rabbitmq,
            nginx=self.env.nginx.enabled,
            prometheus=self.env.monitoring.enabled,
            pgbackrest=self.env.database.pitr is not None,
        )

    def _render(self, bins: Binaries, version: str) -> tuple[Bundle, Bundle]:
        main = render(self.env, self.secrets, caps=Capabilities())
        local = render_local(
            self.env,
            self.secrets,
            self.layout,
            bins,
            python=sys.executable,
            run_as_root=machine.as_root(),
            version=version,
            project_dir=self.project_dir,
        )
        return main, local

    # --- plan and diff -----------------------------------------------------------------------------
    def desired(self, version: str) -> Desired:
        _, local = self._render(self.bins(), version)
        return self._wanted(local, version)[0]

    def _wanted(self, local: Bundle, version: str) -> tuple[Desired, list[migrations.Outcome]]:
        """What `up --version VERSION` runs, from its rendered files: each service at that version with its
        env file; the stores' programs; the migrations pending (all, when PostgreSQL is not running: it
        starts with this up). With it, the runner's status when it was asked."""
        wants = {
            name: Want(version, svc.replicas, digest(local.files[f"env/{name}.env"].text) or "")
            for name, svc in self.env.services.items()
        }
        services = self.env.database_services
        status = self.migrate(services, ["status"]) if services and health.port_open(self.env.database.port) else []
        found = {name: ids for name, ids in pending(status).items() if ids}
        found |= {o.service: ("all (its database is made by this deploy)",) for o in status if not o.ok}
        if services and not status:
            found = dict.fromkeys(services, ("all (PostgreSQL starts with this deploy)",))
        found = {name: found[name] for name in services if name in found}  # in the environment's order
        stores = program_fingerprints(local.files["supervisord.conf"].text, self.env.stores)
        return Desired(wants, found, stores=stores), status

    def observe(self) -> Observed:
        states = supervisord.states(self)
        names = [*self.env.services, *(n for n in states if n not in self.env.services)]
        live = observe.probe_all(self, "/live", 2, only=states)
        probes = observe.probe_all(self, "", 3, only=states)
        haves = {}
        for name in names:
            st = states.get(name)
            if st is None:
                continue
            up = 1 if st.running else 0
            version = live[name].body.get("version") if name in live else None
            healthy = name in probes and probes[name].healthy
            config = digest(machine.read_text(self.layout.env_file(name)))
            haves[name] = Have(str(version) if version else None, up, config, 0 if healthy or not up else 1)
        return Observed(haves, stores=self.running_stores(states))

    def running_stores(self, states: dict[str, ProgramState]) -> dict[str, str]:
        """The running store programs' sections as supervisord read them (the configuration on disk)."""
        written = program_fingerprints(machine.read_text(self.layout.conf) or "", self.env.stores)
        return {name: fp for name, fp in written.items() if name in states and states[name].running}

    def drift(self, version: str) -> list[Drift]:
        main, local = self._render(self.bins(), version)
        found = bundle.drift(main, self.layout.bundle)
        return found + [dataclasses.replace(d, path=f"local/{d.path}") for d in bundle.drift(local, self.layout.root)]

    # --- up ----------------------------------------------------------------------------------------
    def prepare(self, version: str, *, restart_stores: bool) -> Prepared:
        if self.env.database.tls:
            raise MfeError(
                f"environments/{self.env.name}.yaml: database.tls: the local runtime's PostgreSQL listens on "
                "127.0.0.1 only, where nothing crosses a network: TLS to it runs on docker and swarm; remove it"
            )
        bins = self.bins()
        if not machine.services_installed():
            raise MfeError("the services package (mfe_services) is not importable by this Python: run scripts/venv")
        running = supervisord.supervisor_pid(self) is not None
        states = supervisord.states(self, bins) if running else {}
        prepare.check_ports(self, states)
        main, local = self._render(bins, version)
        wanted = program_fingerprints(local.files["supervisord.conf"].text, self.env.stores)
        guard_stores(self.env.name, wanted, self.running_stores(states), allowed=restart_stores, say=self.console.info)
        desired, status = self._wanted(local, version)
        steps = plan(desired, self.observe() if running else Observed({}))  # before the env files change
        bundle.write(main, self.layout.bundle)
        changed = bundle.write(local, self.layout.root)
        write_atomic(self.layout.binaries, pin(self._found()), 0o644)
        prepare.prepare_dirs(self)
        if self._seed:
            databases.seed_from_offsite(self, databases.pitr_tool(self, bins))
        prepare.initdb(self, bins)  # a cluster that is there (seeded too) is left as it is
        self._deploy = deploying.Deploy(bins, running, "supervisord.conf" in changed)
        versions = dict.fromkeys(self.env.services, version)
        return Prepared(version, versions, bundle.digest(local), None, steps, status=status)

    def seed_from_offsite(self) -> None:
        """recover, database.pitr: the next `prepare` makes this machine's cluster from the offsite WAL, where
        it would run initdb."""
        self._seed = True

    def replayed_until(self) -> str | None:
        return databases.replayed_until(self)

    def run_phase(self, phase: str, steps: Sequence[Step], prepared: Prepared, *, timeout: float, wait: bool) -> None:
        try:
            self._phase(phase, steps, prepared, timeout, wait)
        except StartFailed:
            raise
        except MfeError as exc:  # a step that failed: app.up hands it to `failed`, which stops what it started
            failed = StartFailed(str(exc))
            failed.exit_code = exc.exit_code
            raise failed from exc

    def _phase(self, phase: str, steps: Sequence[Step], prepared: Prepared, timeout: float, wait: bool) -> None:
        deploy = self._deploy
        bins = deploy.bins
        if phase == "stores":  # supervisord (re)reads its programs; a changed store restarts (when allowed)
            if not deploy.running:
                supervisord.start_supervisord(self, bins)
                deploy.started = True
            elif deploy.conf_changed:
                supervisord.ctl(self, bins, "reread")
                supervisord.ctl(self, bins, "update")
            deploying.wait_stores(self, timeout)
            self._databases(bins, timeout)
        elif phase == "migrate":  # every time: what is pending is applied (nothing, when the plan has none)
            deploy.migrated = self._migrate(prepared.status or None)
        elif phase == "replace" and steps:  # a new version or env file: stopped, then started (one process)
            supervisord.stop_programs(self, [s.target for s in steps])
            supervisord.start_programs(self, [s.target for s in steps])
        elif phase == "converge":
            deploying.converge(self, bins, timeout, wait=wait)

    def _databases(self, bins: Binaries, timeout: float) -> None:
        databases.wait_promoted(self, bins, timeout)  # a restored cluster (recover) replays its WAL first
        databases.init_databases(self, bins)
        databases.provision(self, bins)
        tool = databases.pitr_tool(self, bins)
        if tool is not None:
            with self.console.status("pgBackRest: the stanza, and a first full backup when there is none"):
                if tool.ensure():
                    self.console.info("pgBackRest: first full backup taken; WAL is archived from now on")
        if self.env.uses_rabbitmq and bins.rabbitmq_server is not None:
            rabbitmqctl = str(bins.rabbitmq_server.parent / "rabbitmqctl")
            ctl = Command((rabbitmqctl, "import_definitions"), env=self.layout.rabbitmq_environ(self.env))
            eventhub.create_users(self.runner, ctl, self.secrets, self.console, timeout)

    def failed(self, prepared: Prepared, error: StartFailed) -> Fallback:
        """No release to go back to here (no versioned images): recorded, what this up started stopped."""
        deploy = self._deploy
        if deploy.migrated is not None:
            self._record("failed", prepared.version, deploy.migrated, note=str(error).splitlines()[0])
        if deploy.started:
            self.console.info("stopping what this up started")
            supervisord.stop(self, deploy.bins)
        raise error

    def rolled_back(self, back: Prepared, error: StartFailed | None) -> None:
        raise MfeError("the local runtime has no release to roll back to")  # failed() never offers one

    def finish(self, prepared: Prepared, seconds: float) -> list[UnitStatus]:
        self._record("succeeded", prepared.version, self._deploy.migrated or deploying.Migrated({}, "", ""))
        return observe.status(self)

    def unit_variables(self) -> dict[str, list[tuple[str, object]]]:
        return environments(self.env, self.secrets, Endpoints.local(self.env))

    def _migrate(self, status: Sequence[migrations.Outcome] | None) -> deploying.Migrated:
        services = migrations.services(self.env, None)
        backup = premigration.before_migrating(self.env, self.console, self.migrate, services, self.backups, status)
        commands = {
            name: migrations.command(self.env, self.secrets, name, ["apply"], project_dir=self.project_dir)
            for name in services
        }
        moment = datetime.now(UTC)
        with self.console.status("applying migrations"):
            outcomes = migrations.run(self.runner, commands)
        failures, heads = migrations.applied(outcomes)
        if failures:
            raise StartFailed("migrations failed: " + "; ".join(failures))
        ran = migrations.describe(outcomes)  # one line per migration applied; the heads are known without any
        for line in ran:
            self.console.info(line)
        return deploying.Migrated(heads, backup, moment.isoformat() if ran else "")

    def _record(self, outcome: str, version: str, done: deploying.Migrated, note: str = "") -> None:
        """The release in the ledger (`releases`), as docker and swarm record theirs: what ran, the backup
        taken before its migrations, and the moment before them (`restore --before-release`)."""
        self.ledger.append(
            "up",
            outcome,
            dict.fromkeys(self.env.services, version),
            migrations=done.heads,
            note=note,
            backup=done.backup,
            migrated_at=done.at,
        )

    # --- what backups need --------------------------------------------------------------------------
    def backups(self) -> Backups:
        """This environment's backups, kept in the project's backups folder."""
        where = local_host(self.project_dir, self.env.name)
        state = (where.files, where.state)
        args = (self.console, self.secrets, self.project_dir, state, self.ledger.running())
        return Backups.of(self.env, self.postgres(), self.runner, *args)

    def acme_folder(self) -> tuple[Files, PurePath]:
        unprivileged = self.env.nginx.enabled and nginx_unprivileged(self.env, run_as_root=machine.as_root())
        return LocalFiles(), acme_folder(self.layout, unprivileged)

    def nginx_certificate(self) -> str | None:
        path = self.layout.root / "nginx" / "ssl" / "cert.pem"
        return path.read_text() if path.exists() else None

    def install_certificate(self, chain: str, key: str) -> None:
        ssl_dir = self.layout.root / "nginx" / "ssl"
        for name in ("cert.pem", "key.pem"):  # a link of tls.mode files is replaced, never written through
            if (ssl_dir / name).is_symlink():
                (ssl_dir / name).unlink()
        write_atomic(ssl_dir / "key.pem", key, 0o600)
        write_atomic(ssl_dir / "cert.pem", chain, 0o644)
        if not self.env.nginx.enabled or supervisord.supervisor_pid(self) is None:
            return  # nginx reads them when it starts
        if nginx_unprivileged(self.env, run_as_root=machine.as_root()):
            prepare.nginx_home(self)  # its copies, readable by its group
        supervisord.ctl(self, self.bins(), "signal", "HUP", "nginx")  # a graceful reload: new workers, old ones finish

    def point_in_time(self) -> LocalPointInTime | None:
        bins = self.bins()
        tool = databases.pitr_tool(self, bins)
        if tool is None:
            return None
        return LocalPointInTime(
            tool,
            self.backups,
            self.layout.pg_data,
            prepare.chown_pg,
            self.stop_services,
            self.start_services,
            lambda timeout: databases.start_postgres(self, bins, timeout),
        )

    def postgres(self) -> LocalPostgres:
        db = self.env.database
        return LocalPostgres(self.bins().pg_bin, db.port, db.superuser, self.secrets.postgres_password)

    def stop_services(self, names: Sequence[str]) -> None:
        supervisord.ctl(self, self.bins(), "stop", *names)

    def start_services(self, names: Sequence[str], timeout: float) -> None:
        supervisord.start_programs(self, names)
        deploying.wait_services(self, self.bins(), timeout)

    # --- status, logs, down ------------------------------------------------------------------------
    def run(self, service: str, argv: Sequence[str], *, in_place: bool) -> int:
        return oneoff.run(self, service, argv, in_place=in_place)

    def db_shell(self, service: str, args: Sequence[str]) -> int:
        return oneoff.db_shell(self, service, args)

    def logs(
        self, unit: str | None, tail: int | None, follow: bool, needle: str | None, write: Callable[[str], None]
    ) -> None:
        logs.logs(self, unit, tail, follow, needle, write)

    def status(self) -> list[UnitStatus]:
        return observe.status(self)

    def health(self) -> dict[str, health.Probe]:
        return observe.probe_all(self, "", 3)

    def migrate(self, services: list[str], action: list[str]) -> list[migrations.Outcome]:
        commands = {
            n: migrations.command(self.env, self.secrets, n, action, project_dir=self.project_dir) for n in services
        }
        return migrations.run(self.runner, commands)

    def units(self) -> list[str]:
        return units(self.env)

    def down(self, *, volumes: bool = False) -> bool:
        stopped = supervisord.stop(self, None)
        if volumes:
            self._delete_data()
            # with the data go its keys: the env files, the self-signed key (history stays)
            bundle.remove(self.layout.bundle)
            bundle.remove(
                self.layout.root, extra=["nginx/ssl/key.pem", "nginx/ssl/cert.pem", self.layout.binaries.name]
            )
        return stopped

    def _delete_data(self) -> None:
        if self.layout.pg_outside is not None:
            shutil.rmtree(self.layout.pg_outside.parent, ignore_errors=True)
        shutil.rmtree(self.layout.data, ignore_errors=True)
