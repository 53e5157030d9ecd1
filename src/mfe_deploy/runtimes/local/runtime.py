"""The local runtime: the stack as supervised processes on this machine (supervisord drives them)."""

from __future__ import annotations

import dataclasses
import grp
import hashlib
import os
import pwd
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path, PurePath

from mfe_deploy import bundle
from mfe_deploy.backups.jobs import Backups
from mfe_deploy.backups.offsite import for_env
from mfe_deploy.backups.pg import LocalPostgres
from mfe_deploy.backups.pitr import PitrTool
from mfe_deploy.backups.store import Store
from mfe_deploy.binaries import Binaries, discover
from mfe_deploy.bundle import Drift
from mfe_deploy.config.models import Environment, seconds
from mfe_deploy.config.secrets import Secrets
from mfe_deploy.errors import MfeError
from mfe_deploy.exec.command import Command
from mfe_deploy.exec.host import Files, LocalFiles, own_folder, write_atomic
from mfe_deploy.exec.host import local as local_host
from mfe_deploy.exec.process import LocalProcess
from mfe_deploy.exec.runner import Completed
from mfe_deploy.exec.secret import Secret
from mfe_deploy.exec.withenv import parse_env_text, read_env_file
from mfe_deploy.local_bundle import (
    NGINX_USER,
    PG_SYSTEM_USER,
    LocalLayout,
    acme_folder,
    nginx_unprivileged,
    pgbackrest_conf,
    render_local,
)
from mfe_deploy.ops import health, migrations, schema
from mfe_deploy.ops.health import Probe
from mfe_deploy.ops.migrations import pending
from mfe_deploy.plan import Desired, Have, Observed, Want, digest
from mfe_deploy.render import Bundle, Capabilities, Endpoints, environments, provision_script, render
from mfe_deploy.runtimes import eventhub, premigration
from mfe_deploy.runtimes.contract import (
    Deployment,
    Features,
    Node,
    StartFailed,
    UnitStatus,
    Unsupported,
    guard_stores,
)
from mfe_deploy.runtimes.oneoff import psql_target
from mfe_deploy.runtimes.pointintime import LocalPointInTime
from mfe_deploy.state.ledger import Ledger, Release
from mfe_deploy.supervisor import ProgramState, parse_status, program_fingerprints

# The variables of the CLI's environment the supervised programs inherit.
INHERITED = frozenset({"PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PYTHONPATH"})

INIT_MARKER = ".mfe-initialized"


def _as_root() -> bool:
    return os.geteuid() == 0


@dataclass(frozen=True)
class Migrated:
    heads: dict[str, str]  # service -> the newest migration this up applied
    backup: str  # the backup taken just before ("": none was needed)
    at: str  # the moment just before they were applied ("": none was)


class LocalRuntime:
    name = "local"

    features = Features(versioned_images=False)

    def __init__(self, deployment: Deployment) -> None:
        self.env: Environment = deployment.loaded.env
        self._secrets = deployment.secrets
        self.console = deployment.console
        self.project_dir = deployment.project_dir
        bundle_dir = (deployment.project_dir / ".mfe" / self.env.name).resolve()
        self.layout = LocalLayout(bundle_dir, _pg_outside(bundle_dir) if _as_root() else None)
        self.runner = LocalProcess()
        self.ledger = Ledger.of(local_host(self.project_dir, self.env.name))

    @cached_property
    def secrets(self) -> Secrets:
        return self._secrets()

    # --- supervisord -------------------------------------------------------------------------------
    def _bins(self) -> Binaries:
        bins = discover(
            {},
            rabbitmq=self.env.uses_rabbitmq,
            nginx=self.env.nginx.enabled,
            prometheus=self.env.monitoring.enabled,
            pgbackrest=self.env.database.pitr is not None,
        )
        if _as_root() and _private_above(bins.pg_bin):
            return dataclasses.replace(bins, pg_bin=_shared_pg_install(bins.pg_bin))
        return bins

    def _ctl(self, bins: Binaries, *args: str, check: bool = True) -> str:
        done = self.runner.run(Command((str(bins.supervisorctl), "-c", str(self.layout.conf), *args)), timeout=120)
        # supervisorctl exits non-zero when a listed program is not running; callers decide what matters.
        if check and done.returncode not in (0, 3) and "no such" not in done.stdout.lower():
            raise MfeError(f"supervisorctl {' '.join(args)} failed: {(done.stdout + done.stderr).strip()}")
        return done.stdout

    def supervisor_pid(self) -> int | None:
        pidfile = self.layout.run / "supervisord.pid"
        try:
            pid = int(pidfile.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def states(self, bins: Binaries | None = None) -> dict[str, ProgramState]:
        if self.supervisor_pid() is None or not self.layout.conf.exists():
            return {}
        return parse_status(self._ctl(bins or self._bins(), "status", check=False))

    def _render(self, bins: Binaries, version: str) -> tuple[Bundle, Bundle]:
        main = render(self.env, self.secrets, caps=Capabilities())
        local = render_local(
            self.env,
            self.secrets,
            self.layout,
            bins,
            python=sys.executable,
            run_as_root=_as_root(),
            version=version,
            project_dir=self.project_dir,
        )
        return main, local

    # --- plan and diff -----------------------------------------------------------------------------
    def desired(self, version: str) -> Desired:
        _, local = self._render(self._bins(), version)
        wants = {
            name: Want(version, svc.replicas, digest(local.files[f"env/{name}.env"].text) or "")
            for name, svc in self.env.services.items()
        }
        running = health.port_open(self.env.database.port)
        pending_ids = pending(self.migrate(self.env.database_services, ["status"])) if running else {}
        return Desired(
            wants, pending_ids, stores=program_fingerprints(local.files["supervisord.conf"].text, self.env.stores)
        )

    def observe(self) -> Observed:
        states = self.states()
        names = [*self.env.services, *(n for n in states if n not in self.env.services)]
        live = self._probe_all("/live", 2, only=states)
        probes = self._probe_all("", 3, only=states)
        haves = {}
        for name in names:
            st = states.get(name)
            if st is None:
                continue
            up = 1 if st.running else 0
            version = live[name].body.get("version") if name in live else None
            healthy = name in probes and probes[name].healthy
            config = digest(_read(self.layout.env_file(name)))
            haves[name] = Have(str(version) if version else None, up, config, 0 if healthy or not up else 1)
        return Observed(haves, stores=self._running_stores(states))

    def _running_stores(self, states: dict[str, ProgramState]) -> dict[str, str]:
        """The running store programs' sections as supervisord read them (the configuration on disk)."""
        written = program_fingerprints(_read(self.layout.conf) or "", self.env.stores)
        return {name: fp for name, fp in written.items() if name in states and states[name].running}

    def drift(self, version: str) -> list[Drift]:
        main, local = self._render(self._bins(), version)
        found = bundle.drift(main, self.layout.bundle)
        return found + [dataclasses.replace(d, path=f"local/{d.path}") for d in bundle.drift(local, self.layout.root)]

    # --- up ----------------------------------------------------------------------------------------
    def up(self, *, wait: bool, timeout: float, version: str = "dev", restart_stores: bool = False) -> list[UnitStatus]:
        if self.env.database.tls:
            raise MfeError(
                f"environments/{self.env.name}.yaml: database.tls: the local runtime's PostgreSQL listens on "
                "127.0.0.1 only, where nothing crosses a network: TLS to it runs on docker and swarm; remove it"
            )
        bins = self._bins()
        if not _services_installed():
            raise MfeError("the services package (mfe_services) is not importable by this Python: run scripts/venv")
        running = self.supervisor_pid() is not None
        states = self.states(bins) if running else {}
        self._check_ports(states)
        main, local = self._render(bins, version)
        wanted = program_fingerprints(local.files["supervisord.conf"].text, self.env.stores)
        guard_stores(self.env.name, wanted, self._running_stores(states), allowed=restart_stores, say=self.console.info)
        bundle.write(main, self.layout.bundle)
        changed = bundle.write(local, self.layout.root)
        self._prepare_dirs()
        self._initdb(bins)
        started_here = False
        migrated: Migrated | None = None
        try:
            if not running:
                self._start_supervisord(bins)
                started_here = True
            elif "supervisord.conf" in changed:
                self._ctl(bins, "reread")
                self._ctl(bins, "update")
            self._wait_infra(timeout)
            self._init_databases(bins)
            self._provision(bins)
            tool = self._pitr_tool(bins)
            if tool is not None:
                with self.console.status("pgBackRest: the stanza, and a first full backup when there is none"):
                    if tool.ensure():
                        self.console.info("pgBackRest: first full backup taken; WAL is archived from now on")
            if self.env.uses_rabbitmq and bins.rabbitmq_server is not None:
                rabbitmqctl = str(bins.rabbitmq_server.parent / "rabbitmqctl")
                ctl = Command((rabbitmqctl, "import_definitions"), env=self.layout.rabbitmq_environ(self.env))
                eventhub.create_users(self.runner, ctl, self.secrets, self.console, timeout)
            migrated = self._migrate()
            states = self.states(bins)
            wanted_up = [*self.env.services, *(["nginx"] if self.env.nginx.enabled else [])]
            to_start = [n for n in wanted_up if not (states.get(n) and states[n].running)]
            if to_start:
                self._start_programs(to_start)
            if wait:
                self._wait_services(bins, timeout)
                if self.env.nginx.enabled:
                    self._wait(lambda: health.port_open(self.env.nginx.https_port), timeout, "nginx")
        except MfeError as exc:
            if migrated is not None:
                self._record("failed", version, migrated, note=str(exc).splitlines()[0])
            if started_here:
                self.console.info("stopping what this up started")
                self._stop(bins)
            raise
        self._record("succeeded", version, migrated)
        return self.status()

    def _check_ports(self, states: dict[str, ProgramState]) -> None:
        wanted = [("postgres", self.env.database.port), ("redis", self.env.redis.port)]
        if self.env.uses_rabbitmq:
            wanted.append(("rabbitmq", self.env.rabbitmq.port))
        wanted += [(name, svc.http_port) for name, svc in self.env.web_services.items()]
        if self.env.nginx.enabled:
            wanted += [("nginx", self.env.nginx.http_port), ("nginx", self.env.nginx.https_port)]
        if self.env.monitoring.enabled:
            wanted.append(("prometheus", self.env.monitoring.port))
        mine = {name for name, st in states.items() if st.state in ("RUNNING", "STARTING", "BACKOFF")}
        wanted = [(unit, port) for unit, port in wanted if unit not in mine]
        found = health.conflicts(wanted, {port: health.port_open(port, timeout=0.2) for _, port in wanted})
        if found:
            raise StartFailed("; ".join(found) + ": stop what holds it, or change the port in the environment file")

    def _prepare_dirs(self) -> None:
        layout = self.layout
        for folder in (
            layout.data,
            layout.logs,
            layout.data / "redis",
            layout.data / "rabbitmq" / "mnesia",  # where RabbitMQ keeps its feature flags file too
            layout.logs / "rabbitmq",
            layout.data / "nginx",
            layout.data / "prometheus",
        ):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.env.nginx.enabled:
            self._tls_files()
        own_folder(layout.run)  # /tmp/mfe-<uid>-<digest>: a name another user can guess and plant
        if self.env.nginx.enabled and nginx_unprivileged(self.env, run_as_root=_as_root()):
            self._nginx_home()
        pg = layout.pg_data
        pg.mkdir(parents=True, exist_ok=True, mode=0o700)
        if _as_root():
            _ensure_system_user(PG_SYSTEM_USER)
            shutil.chown(pg, PG_SYSTEM_USER, PG_SYSTEM_USER)
            link = layout.data / "postgres"
            if layout.pg_outside is not None and not link.is_symlink():
                link.symlink_to(pg)  # so that the cluster is still found from the bundle
            if layout.pg_outside is None:
                # Our own folders between the project and the cluster: traversable (not listable) by its user.
                for folder in (layout.data, layout.root, layout.bundle, layout.bundle.parent):
                    folder.chmod(folder.stat().st_mode | 0o001)
        pitr = self.env.database.pitr
        if pitr is not None:  # pgBackRest's folders, the cluster user's; its socket folder inside ours
            for folder in layout.pitr.folders():
                folder.mkdir(parents=True, exist_ok=True, mode=0o700)
                self._chown_pg(folder)
            write_atomic(layout.pitr.conf, pgbackrest_conf(self.env, pitr, layout.pitr, pg), 0o600)
            self._chown_pg(layout.pitr.conf)
            layout.run.chmod(0o711)  # traversable, not listable: the cluster's user reaches its socket folder

    @staticmethod
    def _chown_pg(path: Path) -> None:
        if _as_root():
            shutil.chown(path, PG_SYSTEM_USER, PG_SYSTEM_USER)

    def _nginx_home(self) -> None:
        """nginx's two folders: its own (pid, temporary files), and root's, readable by its group, with copies
        of its configuration, certificate and key (the key may be a file of root's, mode 0600). Root writes
        only in the second: nginx's user cannot put a link there for root to write through."""
        layout = self.layout
        _ensure_system_user(NGINX_USER)
        group = grp.getgrnam(NGINX_USER).gr_gid
        layout.run.chmod(0o711)  # traversable to nginx's folders, not listable
        for folder, owner, mode in (
            (layout.nginx_run, pwd.getpwnam(NGINX_USER).pw_uid, 0o700),
            (layout.nginx_conf, 0, 0o750),
        ):
            folder.mkdir(exist_ok=True)  # in root's run folder: nobody else can put anything in its place
            os.chown(folder, owner, group, follow_symlinks=False)
            folder.chmod(mode)
        sources = {
            "nginx.conf": layout.root / "nginx" / "nginx.conf",
            "cert.pem": layout.root / "nginx" / "ssl" / "cert.pem",
            "key.pem": layout.root / "nginx" / "ssl" / "key.pem",
        }
        for name, source in sources.items():
            write_atomic(layout.nginx_conf / name, source.read_bytes(), 0o640)
            os.chown(layout.nginx_conf / name, 0, group, follow_symlinks=False)

    def _initdb(self, bins: Binaries) -> None:
        pgdata = self.layout.pg_data
        if (pgdata / "PG_VERSION").exists():
            return
        mode = self.layout.run.stat().st_mode & 0o777  # 0711 when nginx has a folder in it
        with tempfile.NamedTemporaryFile("w", delete=False, dir=self.layout.run, prefix="pw") as pw:
            pw.write(self.secrets.postgres_password.reveal())
        try:
            as_user = ["runuser", "-u", PG_SYSTEM_USER, "--"] if _as_root() else []
            if _as_root():
                shutil.chown(pw.name, PG_SYSTEM_USER)
                self.layout.run.chmod(0o711)
            self.console.info(f"initialising PostgreSQL in {pgdata}")
            initdb = (str(bins.pg_bin / "initdb"), "-D", str(pgdata), "-U", self.env.database.superuser)
            options = (f"--pwfile={pw.name}", "--auth=scram-sha-256", "-E", "UTF8", "--no-instructions")
            done = self.runner.run(Command((*as_user, *initdb, *options)))
        finally:
            Path(pw.name).unlink(missing_ok=True)
            self.layout.run.chmod(mode)
        if done.returncode != 0:
            shutil.rmtree(pgdata, ignore_errors=True)
            raise StartFailed(f"initdb failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ''}")

    def _start_supervisord(self, bins: Binaries) -> None:
        # Every program inherits supervisord's environment: it gets only what a process needs to run, never
        # the CLI's (which holds the secrets and whatever else the operator exported). A service reads its
        # own variables from its env file; a program's own settings are `environment=` in its section.
        inherited = {key: value for key, value in os.environ.items() if key in INHERITED}
        supervisord = Command((str(bins.supervisord), "-c", str(self.layout.conf)), env=inherited, inherit=False)
        done = self.runner.run(supervisord)
        if done.returncode != 0:
            raise StartFailed(f"supervisord did not start: {(done.stdout + done.stderr).strip()}")
        self._wait(lambda: (self.layout.run / "supervisor.sock").exists(), 10, "supervisord")

    def _start_programs(self, names: Sequence[str]) -> None:
        """Start without waiting on each program's startsecs in turn (supervisorctl start would):
        readiness is /health, and a crash shows as BACKOFF or FATAL while we wait for it."""
        import xmlrpc.client

        from supervisor.xmlrpc import SupervisorTransport  # type: ignore[import-untyped]

        transport = SupervisorTransport(None, None, f"unix://{self.layout.run / 'supervisor.sock'}")
        rpc = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
        for name in names:
            try:
                rpc.supervisor.startProcess(name, False)
            except xmlrpc.client.Fault as fault:
                if "ALREADY_STARTED" not in fault.faultString:
                    raise StartFailed(
                        f"{name} did not start ({fault.faultString}); its last log lines:\n{self.tail(name, 20)}"
                    ) from None

    def _wait(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self.console.status(f"waiting for {what}"):
            while time.monotonic() < deadline:
                if ready():
                    return
                time.sleep(0.1)
        raise StartFailed(f"{what} not ready after {timeout:.0f}s")

    def _wait_infra(self, timeout: float) -> None:
        units = [("postgres", self.env.database.port), ("redis", self.env.redis.port)]
        if self.env.uses_rabbitmq:
            units.append(("rabbitmq", self.env.rabbitmq.port))
        for unit, port in units:
            try:
                self._wait(lambda port=port: health.port_open(port), timeout, unit)  # type: ignore[misc]
            except StartFailed:
                raise StartFailed(f"{unit} did not start within {timeout:.0f}s\n{self.tail(unit, 15)}") from None

    def _psql(
        self, bins: Binaries, database: str, script: str | Secret, extra_env: Mapping[str, str | Secret]
    ) -> Completed:
        psql = (str(bins.pg_bin / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1")
        who = ("-p", str(self.env.database.port), "-U", self.env.database.superuser, "-d", database, "-f", "-")
        env: dict[str, str | Secret] = {**extra_env, "PGPASSWORD": self.secrets.postgres_password}
        return self.runner.run(Command((*psql, *who), env=env, input=script), timeout=120)

    def _init_databases(self, bins: Binaries) -> None:
        """Once per cluster: the roles and databases the docker entrypoint would create from initdb/."""
        marker = self.layout.data / INIT_MARKER
        if marker.exists():
            return
        unit = {k: (v.reveal() if isinstance(v, Secret) else str(v)) for k, v in self._units()["postgres"]}
        deadline = time.monotonic() + 30
        while self._psql(bins, "postgres", "SELECT 1", {}).returncode != 0:  # port open is not ready yet
            if time.monotonic() > deadline:
                raise StartFailed(f"postgres does not accept connections\n{self.tail('postgres', 15)}")
            time.sleep(0.2)
        if unit["POSTGRES_DB"] != "postgres":
            done = self._psql(bins, "postgres", f'CREATE DATABASE "{unit["POSTGRES_DB"]}"', {})
            if done.returncode != 0:
                raise StartFailed(f"creating {unit['POSTGRES_DB']} failed: {done.stderr.strip()}")
        script = (self.layout.bundle / "initdb" / "10-databases.sql").read_text()
        # The script reads the passwords from its environment (psql's \getenv): kept Secret, never printed.
        variables = {k: v if isinstance(v, Secret) else str(v) for k, v in self._units()["postgres"]}
        done = self._psql(bins, unit["POSTGRES_DB"], script, variables)
        if done.returncode != 0:
            raise StartFailed(f"creating the service databases failed: {done.stderr.strip()}")
        marker.write_text("roles and databases created\n")

    def _provision(self, bins: Binaries) -> None:
        """Every up: a database service added since the cluster was made gets its role and database."""
        import secrets

        script = provision_script(self.env, self.secrets, f"mfe_{secrets.token_hex(6)}")
        done = self._psql(bins, "postgres", script, {})
        if done.returncode != 0:
            raise StartFailed(f"creating the roles and databases of new services failed: {done.stderr.strip()}")

    def _units(self) -> dict[str, list[tuple[str, object]]]:
        return environments(self.env, self.secrets, Endpoints.local(self.env))

    def _migrate(self) -> Migrated:
        services = migrations.services(self.env, None)
        backup = premigration.before_migrating(self.env, self.console, self.migrate, services, self.backups)
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
        for line in migrations.describe(outcomes):
            self.console.info(line)
        return Migrated(heads, backup, moment.isoformat() if heads else "")

    def _record(self, outcome: str, version: str, done: Migrated, note: str = "") -> None:
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

    def _wait_services(self, bins: Binaries, timeout: float) -> None:
        started = time.monotonic()
        deadline = started + timeout
        names = list(self.env.services)
        with self.console.status("waiting for the services to report healthy") as waiting:
            while True:
                probes = self._probe_all("", 2)
                if all(p.healthy for p in probes.values()):
                    return
                waiting.update(health.progress(probes), f"{time.monotonic() - started:.0f}s of {timeout:.0f}s")
                states = self.states(bins)
                dead = [n for n in names if states.get(n) and states[n].state in ("FATAL", "EXITED", "BACKOFF")]
                if dead or time.monotonic() > deadline:
                    name = (dead or [n for n, p in probes.items() if not p.healthy])[0]
                    why = "crashed at start" if dead else f"not healthy after {timeout:.0f}s"
                    raise StartFailed(f"{name} {why}; its last log lines:\n{self.tail(name, 20)}")
                time.sleep(0.2)

    # --- what backups need --------------------------------------------------------------------------
    def backups(self) -> Backups:
        """This environment's backups, kept in the project's backups folder."""
        store = Store.of(self.project_dir, self.env)
        where = local_host(self.project_dir, self.env.name)
        offsite = for_env(self.env, self.secrets, self.project_dir, (where.files, where.state))
        passphrase = self.secrets.backup_passphrase
        return Backups(self.env, self.postgres(), self.runner, store, self.console, passphrase, offsite=offsite)

    def _pitr_tool(self, bins: Binaries) -> PitrTool | None:
        pitr = self.env.database.pitr
        if pitr is None or bins.pgbackrest is None:
            return None
        user = PG_SYSTEM_USER if _as_root() else None
        paths = self.layout.pitr
        return PitrTool(self.env, pitr, paths, bins.pgbackrest, self.runner, self.secrets.postgres_password, user)

    # --- one-off commands --------------------------------------------------------------------------
    def _service_values(self, service: str) -> dict[str, str]:
        if service not in self.env.services:
            raise MfeError(f"unknown service {service!r}; one of: {', '.join(self.env.services)}")
        env_file = self.layout.env_file(service)
        if not env_file.exists():
            raise MfeError(f"{service} has no environment file yet: run `mfe-deploy up --env {self.env.name}` first")
        return read_env_file(str(env_file))

    def run(self, service: str, argv: Sequence[str], *, in_place: bool) -> int:
        """A process with the service's variables, as supervisord starts the service (no container to enter:
        exec is run here), from the project folder; only the basic variables of this shell reach it."""
        values = self._service_values(service)
        environ = {**{k: v for k, v in os.environ.items() if k in INHERITED | {"TERM"}}, **values}
        return self.runner.attach(Command(tuple(argv), env=environ, cwd=self.project_dir, inherit=False))

    def db_shell(self, service: str, args: Sequence[str]) -> int:
        if service not in self.env.database_services:
            raise MfeError(f"{service} owns no database; those that do: {', '.join(self.env.database_services)}")
        target = psql_target(self._service_values(service)["DATABASE_URL"])
        psql = str(self._bins().pg_bin / "psql")
        environ = {k: v for k, v in os.environ.items() if k in INHERITED | {"TERM", "PAGER"}}
        own_folder(self.layout.run)
        with tempfile.NamedTemporaryFile("w", dir=self.layout.run, prefix="pgpass", delete=False) as pgpass:
            pgpass.write(target.pgpass_line())
        try:
            argv = [psql, *target.args(), *args]
            return self.runner.attach(Command(tuple(argv), env={**environ, "PGPASSFILE": pgpass.name}, inherit=False))
        finally:
            Path(pgpass.name).unlink(missing_ok=True)

    def acme_folder(self) -> tuple[Files, PurePath]:
        unprivileged = self.env.nginx.enabled and nginx_unprivileged(self.env, run_as_root=_as_root())
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
        if not self.env.nginx.enabled or self.supervisor_pid() is None:
            return  # nginx reads them when it starts
        if nginx_unprivileged(self.env, run_as_root=_as_root()):
            self._nginx_home()  # its copies, readable by its group
        self._ctl(self._bins(), "signal", "HUP", "nginx")  # a graceful reload: new workers, old ones finish

    def point_in_time(self) -> LocalPointInTime | None:
        bins = self._bins()
        tool = self._pitr_tool(bins)
        if tool is None:
            return None
        return LocalPointInTime(
            tool,
            self.backups,
            self.layout.pg_data,
            self._chown_pg,
            self.stop_services,
            self.start_services,
            lambda timeout: self._start_postgres(bins, timeout),
        )

    def _start_postgres(self, bins: Binaries, timeout: float) -> None:
        """Start the cluster and wait until it accepts connections out of recovery (a point-in-time
        restore replays WAL first, then promotes)."""
        self._start_programs(["postgres"])

        def promoted() -> bool:
            done = self._psql(bins, "postgres", "SELECT 'recovery=' || pg_is_in_recovery()", {})
            return done.returncode == 0 and "recovery=false" in done.stdout

        try:
            self._wait(promoted, timeout, "PostgreSQL to replay its WAL and promote")
        except StartFailed:
            raise StartFailed(f"PostgreSQL did not come back\n{self.tail('postgres', 15)}") from None

    def postgres(self) -> LocalPostgres:
        db = self.env.database
        return LocalPostgres(self._bins().pg_bin, db.port, db.superuser, self.secrets.postgres_password)

    def stop_services(self, names: Sequence[str]) -> None:
        self._ctl(self._bins(), "stop", *names)

    def start_services(self, names: Sequence[str], timeout: float) -> None:
        self._start_programs(names)
        self._wait_services(self._bins(), timeout)

    # --- status, logs, down ------------------------------------------------------------------------
    def status(self) -> list[UnitStatus]:
        states = self.states() if self.layout.conf.exists() else {}
        live = self._probe_all("/live", 2)
        probes = self._probe_all("", 3)
        rows = []
        infra = [("postgres", self.env.database.port), ("redis", self.env.redis.port)]
        if self.env.uses_rabbitmq:
            infra.append(("rabbitmq", self.env.rabbitmq.port))
        if self.env.monitoring.enabled:
            infra.append(("prometheus", self.env.monitoring.port))
        for unit, port in infra:
            st = states.get(unit)
            up = health.port_open(port)
            rows.append(
                UnitStatus(
                    unit,
                    st.state if st else "STOPPED",
                    st.pid if st else None,
                    "-",
                    "healthy" if up and st and st.running else "down",
                )
            )
        if self.env.nginx.enabled:
            st = states.get("nginx")
            up = health.port_open(self.env.nginx.https_port)
            rows.append(
                UnitStatus(
                    "nginx",
                    st.state if st else "STOPPED",
                    st.pid if st else None,
                    "-",
                    "healthy" if up and st and st.running else "down",
                )
            )
        for name in self.env.services:
            st = states.get(name)
            probe = probes[name]
            verdict = str(probe.body.get("status", "down")) if probe.status else "down"
            rows.append(
                UnitStatus(
                    name,
                    st.state if st else "STOPPED",
                    st.pid if st else None,
                    str(live[name].body.get("version", "-")),
                    verdict,
                )
            )
        return rows

    def health(self) -> dict[str, health.Probe]:
        return self._probe_all("", 3)

    def _probe_all(self, suffix: str, timeout: float, only: Mapping[str, object] | None = None) -> dict[str, Probe]:
        """Every service's probe, in order: a web service's /health (or /health/live with `suffix`), a worker's
        heartbeat file. `only`: these names alone (the running programs)."""
        names = [n for n in self.env.services if only is None or n in only]
        urls = {
            name: f"http://127.0.0.1:{svc.http_port}{svc.health}{suffix}"
            for name, svc in self.env.web_services.items()
            if name in names
        }
        probes = health.probe_all(urls, timeout=timeout)
        for name in names:
            svc = self.env.services[name]
            if svc.kind == "worker":
                probes[name] = self._heartbeat(name, seconds(svc.heartbeat))
        return {name: probes[name] for name in names}

    def _heartbeat(self, name: str, max_age: int) -> Probe:
        """A worker's health: how long ago it touched its HEARTBEAT_FILE."""
        version = parse_env_text(_read(self.layout.env_file(name)) or "").get("SERVICE_VERSION", "-")
        try:
            age = time.time() - self.layout.heartbeat(name).stat().st_mtime
        except FileNotFoundError:
            return Probe(None, {}, "no heartbeat yet")
        body = {
            "status": "healthy" if age < max_age else "unhealthy",
            "version": version,
            "heartbeat_age": round(age, 1),
        }
        if age < max_age:
            return Probe(200, body)
        return Probe(503, body, f"no heartbeat for {age:.0f}s (at most {max_age}s)")

    def log_file(self, unit: str) -> Path:
        return self.layout.logs / f"{unit}.log"

    def tail(self, unit: str, lines: int) -> str:
        path = self.log_file(unit)
        if not path.exists():
            return f"  ({path} is empty)"
        text = path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(f"  {line}" for line in text)

    def logs(
        self, unit: str | None, tail: int | None, follow: bool, needle: str | None, write: Callable[[str], None]
    ) -> None:
        chosen = [unit] if unit else self.units()
        prefix = len(chosen) > 1
        offsets = {}
        for name in chosen:
            path = self.log_file(name)
            lines = path.read_text(errors="replace").splitlines() if path.exists() else []
            lines = [line for line in lines if needle is None or needle in line]
            for line in lines[-tail:] if tail is not None else lines:
                write(f"{name} | {line}" if prefix else line)
            offsets[name] = path.stat().st_size if path.exists() else 0
        while follow:
            time.sleep(0.5)
            for name in chosen:
                path = self.log_file(name)
                if not path.exists() or path.stat().st_size <= offsets[name]:
                    continue
                with path.open("rb") as handle:
                    handle.seek(offsets[name])
                    data = handle.read()
                offsets[name] += len(data)
                for line in data.decode(errors="replace").splitlines():
                    if needle is None or needle in line:
                        write(f"{name} | {line}" if prefix else line)

    def migrate(self, services: list[str], action: list[str]) -> list[migrations.Outcome]:
        commands = {
            n: migrations.command(self.env, self.secrets, n, action, project_dir=self.project_dir) for n in services
        }
        return migrations.run(self.runner, commands)

    def rollback(
        self, service: str, to: str | None, timeout: float, *, schema_policy: schema.Policy = "check"
    ) -> Release:
        raise Unsupported("rollback needs versioned images: it works on the docker runtime")

    def rollback_plan(self, service: str, to: str | None) -> schema.RollbackPlan:
        raise Unsupported("rollback needs versioned images: it works on the docker runtime")

    def nodes(self) -> list[Node]:
        raise Unsupported(f"the {self.name} runtime runs on one host: nodes are a swarm's (runtime: swarm)")

    def set_availability(self, node: str, availability: str, timeout: float) -> None:
        raise Unsupported(f"the {self.name} runtime runs on one host: nodes are a swarm's (runtime: swarm)")

    def prune_images(self, keep: int) -> list[str]:
        raise Unsupported("images live on the docker runtime")

    def units(self) -> list[str]:
        names = list(self.env.stores)
        names += ["prometheus"] if self.env.monitoring.enabled else []
        return names + list(self.env.services) + (["nginx"] if self.env.nginx.enabled else [])

    def _tls_files(self) -> None:
        """nginx reads cert.pem and key.pem from the bundle: made once (self-signed) or linked (files)."""
        ssl_dir = self.layout.root / "nginx" / "ssl"
        ssl_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tls = self.env.nginx.tls
        if tls.mode == "files" and tls.certificate and tls.key:
            for name, target in (("cert.pem", tls.certificate), ("key.pem", tls.key)):
                link = ssl_dir / name
                link.unlink(missing_ok=True)
                link.symlink_to(target)
            return
        if (ssl_dir / "cert.pem").exists():
            return
        from mfe_deploy import tls as certificates

        cert, key = certificates.self_signed(self.env.nginx.domain)
        write_atomic(ssl_dir / "key.pem", key, 0o600)
        write_atomic(ssl_dir / "cert.pem", cert, 0o644)

    def down(self, *, volumes: bool = False) -> bool:
        stopped = self._stop(None)
        if volumes:
            self._delete_data()
            # with the data go its keys: the env files, the self-signed key (history stays)
            bundle.remove(self.layout.bundle)
            bundle.remove(self.layout.root, extra=["nginx/ssl/key.pem", "nginx/ssl/cert.pem"])
        return stopped

    def _stop(self, bins: Binaries | None) -> bool:
        pid = self.supervisor_pid()
        if pid is None:
            return False
        bins = bins or self._bins()
        with self.console.status("stopping"):
            self._ctl(bins, "shutdown", check=False)
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except OSError:
                    break
                time.sleep(0.1)
        shutil.rmtree(self.layout.run, ignore_errors=True)
        return True

    def _delete_data(self) -> None:
        if self.layout.pg_outside is not None:
            shutil.rmtree(self.layout.pg_outside.parent, ignore_errors=True)
        shutil.rmtree(self.layout.data, ignore_errors=True)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return None


def _private_above(path: Path) -> bool:
    return any(folder.exists() and not folder.stat().st_mode & 0o001 for folder in [path, *path.parents])


def _pg_outside(bundle_dir: Path) -> Path | None:
    """As root, PostgreSQL runs as an unprivileged user, which must traverse every folder above its data.
    When one of them is private (/root, a 0700 temp folder), the cluster lives under /var/lib/mfe-deploy
    instead, linked from the bundle: we do not loosen the permissions of someone's folders."""
    if _private_above(bundle_dir):
        digest = hashlib.sha256(str(bundle_dir).encode()).hexdigest()[:16]
        return Path("/var/lib/mfe-deploy") / digest / "postgres"
    return None


def _shared_pg_install(pg_bin: Path) -> Path:
    """The same reason for the binaries: the pgserver wheel's PostgreSQL inside a venv under /root cannot be
    run by the unprivileged user, so its install tree is copied once to a world-readable folder keyed by where
    it came from and when it was installed. The layout is kept: the binaries find lib/ and share/ relative to
    themselves, and their RPATH names the wheel's `<package>.libs` folder beside the package (auditwheel)."""
    install, package = pg_bin.parent, pg_bin.parent.parent
    stamp = f"{install}:{(pg_bin / 'postgres').stat().st_mtime_ns}"
    target = Path("/var/lib/mfe-deploy/pg") / hashlib.sha256(stamp.encode()).hexdigest()[:16]
    copied = target / package.name / install.name / "bin"
    if not (copied / "postgres").is_file():
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(install, partial / package.name / install.name, symlinks=True)
        libs = package.with_name(package.name + ".libs")
        if libs.is_dir():
            shutil.copytree(libs, partial / libs.name, symlinks=True)
        for folder in (partial, target.parent, target.parent.parent):
            folder.chmod(0o755)
        partial.rename(target)
    return copied


def _services_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("mfe_services") is not None


def _ensure_system_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
        return
    except KeyError:
        pass
    useradd = ("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name)
    done = LocalProcess().run(Command(useradd))
    if done.returncode != 0:
        raise MfeError(f"useradd {name} failed: {(done.stdout + done.stderr).strip()}")
