"""The local runtime's files (paths relative to .mfe/<env>/local/): supervisord.conf, env files with
loopback endpoints, the RabbitMQ config.
Pure: paths and binaries come in as values, files come out as a Bundle."""

from __future__ import annotations

import hashlib
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from mfe_deploy.binaries import Binaries
from mfe_deploy.config import urls
from mfe_deploy.config.models import Environment, Pitr, seconds
from mfe_deploy.config.secrets import Secrets
from mfe_deploy.errors import ConfigError, Problem
from mfe_deploy.render import (
    MAINTENANCE_DIR,
    Bundle,
    BundleFile,
    Endpoints,
    NginxPaths,
    _jinja,
    environments,
    nginx_conf,
    prometheus_config,
)

PG_SYSTEM_USER = "mfe-postgres"


@dataclass(frozen=True)
class LocalLayout:
    bundle: Path  # .mfe/<env>, absolute
    # Where the PostgreSQL cluster lives when it cannot live under the bundle (see LocalRuntime).
    pg_outside: Path | None = None

    @property
    def pg_data(self) -> Path:
        return self.pg_outside if self.pg_outside is not None else self.data / "postgres"

    @property
    def pitr(self) -> PitrPaths:
        """pgBackRest's folder beside the cluster (its user reaches it wherever the cluster lives)."""
        return PitrPaths(self.pg_data.parent / "pgbackrest", self.run / "pg")

    @property
    def root(self) -> Path:
        return self.bundle / "local"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def conf(self) -> Path:
        return self.root / "supervisord.conf"

    @property
    def binaries(self) -> Path:
        """The binaries the stores were started with (binaries.pin), kept while they are there."""
        return self.root / "binaries.json"

    @property
    def run(self) -> Path:
        """Sockets live in a short folder: a Unix socket path may not exceed ~107 bytes."""
        digest = hashlib.sha256(str(self.bundle).encode()).hexdigest()[:12]
        return Path("/tmp") / f"mfe-{os.getuid()}-{digest}"  # noqa: S108 - private 0700 folder, per user and bundle

    def heartbeat(self, service: str) -> Path:
        """Where a worker proves it is alive (its HEARTBEAT_FILE)."""
        return self.run / f"{service}.heartbeat"

    @property
    def nginx_run(self) -> Path:
        """nginx's own folder when it runs as its own user: its pid and temporary files, nothing else (root
        never writes in a folder that user can change). Inside the run folder, traversable, not listable."""
        return self.run / "nginx"

    @property
    def nginx_conf(self) -> Path:
        """Root's folder, readable by nginx's group: copies of its configuration, certificate and key."""
        return self.run / "nginx-conf"

    def env_file(self, unit: str) -> Path:
        return self.root / "env" / f"{unit}.env"

    def rabbitmq_environ(self, env: Environment) -> dict[str, str]:
        """What rabbitmq-server runs with, and what rabbitmqctl needs to reach it (node name, cookie)."""
        return {
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq" / "rabbitmq"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "rabbitmq" / "enabled_plugins"),
            "RABBITMQ_NODENAME": f"mfe-{env.name}-{env.rabbitmq.port}@localhost",
            "RABBITMQ_MNESIA_BASE": str(self.data / "rabbitmq" / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.logs / "rabbitmq"),
            # Erlang's distribution port, beside the AMQP one (and within 65535: a high AMQP port counts down).
            "RABBITMQ_DIST_PORT": str(port + 20000 if (port := env.rabbitmq.port) < 45000 else port - 20000),
            "HOME": str(self.data / "rabbitmq"),
        }


NGINX_USER = "mfe-nginx"
# As root: give nginx's user the pipes supervisord made (nginx opens /dev/stderr and /dev/stdout by name),
# then become that user, with no supplementary group, and run nginx.
NGINX_DROP = (
    f"chown {NGINX_USER}:{NGINX_USER} /proc/self/fd/1 /proc/self/fd/2"
    f' && exec setpriv --reuid={NGINX_USER} --regid={NGINX_USER} --clear-groups "$@"'
)


def acme_folder(layout: LocalLayout, unprivileged: bool) -> Path:
    """Where the local nginx serves ACME challenges from: root's folder its group reads when it runs as its
    own user, the bundle's nginx folder otherwise."""
    return layout.nginx_conf / "acme" if unprivileged else layout.root / "nginx" / "acme"


def nginx_unprivileged(env: Environment, *, run_as_root: bool) -> bool:
    """Whether the local nginx runs as NGINX_USER: when started by root, unless a port of its is below 1024."""
    return run_as_root and min(env.nginx.http_port, env.nginx.https_port) >= 1024


def _env_text(env_name: str, unit: str, variables: list[tuple[str, object]]) -> str:
    return _jinja().get_template("service.env.j2").render(env_name=env_name, unit=unit, variables=variables)


def render_local(
    env: Environment,
    secrets: Secrets,
    layout: LocalLayout,
    bins: Binaries,
    *,
    python: str,
    run_as_root: bool,
    version: str = "dev",
    project_dir: Path | None = None,
) -> Bundle:
    files: dict[str, BundleFile] = {}
    units = environments(env, secrets, Endpoints.local(env))
    services = []
    for name in env.services:
        variables = [*units[name], ("HOST", "127.0.0.1"), ("SERVICE_VERSION", version)]
        if env.services[name].role == "gateway":
            variables.append(("MAINTENANCE_FILE", str(layout.bundle / MAINTENANCE_DIR / "maintenance.json")))
        if env.services[name].kind == "worker":
            variables.append(("HEARTBEAT_FILE", str(layout.heartbeat(name))))
        text = _env_text(env.name, name, variables)
        files[f"env/{name}.env"] = BundleFile(text, secret=True)
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        svc = env.services[name]
        env_file = str(layout.env_file(name))
        if svc.bundled:
            argv = [python, "-m", "mfe_services", name, "--env-file", env_file]
        elif svc.command is not None:
            folder = str(project_dir or layout.bundle.parent.parent)
            argv = [python, "-m", "mfe_deploy.exec.withenv", env_file, folder, "--", *svc.command]
        else:
            why = "missing: the local runtime runs each service as a process"
            raise ConfigError([Problem(f"environments/{env.name}.yaml", None, f"services.{name}.command", why)])
        command = shlex.join(argv)
        services.append(
            {
                "name": name,
                "command": command,
                "environment": f'MFE_CONFIG="{digest}"',
                "stopwait": seconds(svc.stop_timeout),
            }
        )
    data = layout.data
    pg_command = shlex.join(
        [
            str(bins.pg_bin / "postgres"),
            "-D",
            str(layout.pg_data),
            "-p",
            str(env.database.port),
            "-c",
            "listen_addresses=127.0.0.1",
            *(
                pitr_settings(env, env.database.pitr, bins.pgbackrest, layout.pitr)
                if env.database.pitr is not None and bins.pgbackrest is not None
                else ["-c", "unix_socket_directories="]
            ),
        ]
    ).replace("%", "%%")  # supervisord expands %(name)s: a literal % (archive_command's %p) is doubled
    # With a password, Redis reads it from its own configuration file (mode 0600), never from an argument.
    redis_conf: list[str] = []
    if secrets.redis_password is not None:
        files["redis/redis.conf"] = BundleFile(urls.redis_conf(env, secrets), secret=True)
        redis_conf = [str(layout.root / "redis" / "redis.conf")]
    redis_command = shlex.join(
        [
            str(bins.redis_server),
            *redis_conf,
            "--port",
            str(env.redis.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data / "redis"),
            "--appendonly",
            "yes" if env.redis.persistence else "no",
            "--save",
            "",
            *(["--maxmemory", env.redis.maxmemory] if env.redis.maxmemory else []),
        ]
    )
    rabbitmq_command = rabbitmq_environment = None
    if env.uses_rabbitmq and bins.rabbitmq_server is not None:
        assert secrets.rabbitmq_password is not None
        files["rabbitmq/rabbitmq.conf"] = BundleFile(
            f"listeners.tcp.default = 127.0.0.1:{env.rabbitmq.port}\nloopback_users = none\n"
            f"default_user = {env.rabbitmq.user}\ndefault_pass = {secrets.rabbitmq_password.reveal()}\n",
            secret=True,
        )
        files["rabbitmq/enabled_plugins"] = BundleFile("[].\n")
        rabbitmq_command = str(bins.rabbitmq_server)
        rabbitmq_environment = ",".join(f'{k}="{v}"' for k, v in layout.rabbitmq_environ(env).items())
    nginx_command = None
    if env.nginx.enabled and bins.nginx is not None:
        # Run by root, nginx drops to its own user (when its ports allow: a port below 1024 needs root):
        # supervisord's pipes are root's, so they are handed over first, as in nginx's container.
        home = layout.nginx_run if nginx_unprivileged(env, run_as_root=run_as_root) else None
        conf_path = layout.nginx_conf / "nginx.conf" if home else layout.root / "nginx" / "nginx.conf"
        paths = NginxPaths(
            upstream="127.0.0.1",
            ssl=str(layout.nginx_conf if home else layout.root / "nginx" / "ssl"),
            pid=str((home or layout.run) / "nginx.pid"),
            listen_http=f"127.0.0.1:{env.nginx.http_port}",
            listen_https=f"127.0.0.1:{env.nginx.https_port}",
            listen_http6=None,
            listen_https6=None,  # loopback IPv4 only: a host may have no ::1
            http2_directive=False,  # whatever this machine's nginx: the listen parameter works on all
            dns=None,  # no engine DNS here: an OCSP responder given by name is not stapled
            temp=str(home or data / "nginx"),
            acme_root=str(acme_folder(layout, home is not None)),
        )
        files["nginx/nginx.conf"] = BundleFile(nginx_conf(env, paths))
        argv = [str(bins.nginx), "-e", "stderr", "-c", str(conf_path), "-g", "daemon off;"]
        if home:
            argv = ["sh", "-c", NGINX_DROP, "nginx", *argv]
        nginx_command = shlex.join(argv)
    prometheus_command = None
    if env.monitoring.enabled and bins.prometheus is not None:
        targets = {name: ("127.0.0.1", svc.http_port) for name, svc in env.web_services.items()}
        files["prometheus/prometheus.yml"] = BundleFile(prometheus_config(env, targets))
        prometheus_command = shlex.join(
            [
                str(bins.prometheus),
                f"--config.file={layout.root / 'prometheus' / 'prometheus.yml'}",
                f"--storage.tsdb.path={data / 'prometheus'}",
                f"--storage.tsdb.retention.time={env.monitoring.retention}",
                f"--web.listen-address=127.0.0.1:{env.monitoring.port}",
            ]
        )
    conf = (
        _jinja()
        .get_template("supervisord.conf.j2")
        .render(
            env=env,
            run=layout.run,
            logs=layout.logs,
            pg_command=pg_command,
            redis_command=redis_command,
            pg_user=PG_SYSTEM_USER if run_as_root else None,
            rabbitmq_command=rabbitmq_command,
            rabbitmq_environment=rabbitmq_environment,
            services=services,
            nginx_command=nginx_command,
            prometheus_command=prometheus_command,
        )
    )
    files["supervisord.conf"] = BundleFile(conf)
    return Bundle(files=dict(sorted(files.items())))


# --- point-in-time recovery (database.pitr): pgBackRest beside the cluster ----------------------------
@dataclass(frozen=True)
class PitrPaths:
    root: Path  # beside the cluster's data folder, owned by its user
    socket: Path  # the server's Unix socket folder (short: a socket path has at most ~107 bytes)

    @property
    def conf(self) -> Path:
        return self.root / "pgbackrest.conf"

    @property
    def repo(self) -> Path:
        return self.root / "repo"

    @property
    def pgpass(self) -> Path:
        return self.root / "pgpass"

    @property
    def offsite_ca(self) -> Path:
        """A copy of backup.offsite.ca_file the cluster's user reads (archive-push runs as it)."""
        return self.root / "offsite-ca.pem"

    def folders(self) -> list[Path]:
        return [self.root, self.repo, self.root / "log", self.root / "lock", self.root / "spool", self.socket]


def pgbackrest_conf(env: Environment, pitr: Pitr, paths: PitrPaths, pg_data: Path, secrets: Secrets) -> str:
    """repo1 beside the cluster; repo2 on the offsite store when backup.offsite is set (the WAL is pushed to
    both as it is written, `backup` takes a full backup in each): the file holds the store's key, so it is
    written 0600 for the cluster's user, the one reader (its archive_command runs as it)."""
    return (
        "# Written by mfe-deploy (database.pitr); do not edit.\n"
        "[global]\n"
        f"repo1-path={paths.repo}\n"
        f"repo1-retention-full={pitr.keep_full}\n"
        f"log-path={paths.root / 'log'}\n"
        f"lock-path={paths.root / 'lock'}\n"
        f"spool-path={paths.root / 'spool'}\n"
        "log-level-console=warn\n"
        "log-level-file=info\n"
        "start-fast=y\n"
        f"archive-timeout={max(60, 2 * seconds(pitr.archive_timeout))}\n"
        f"{_offsite_repo(env, pitr, paths, secrets)}"
        "\n"
        f"[{env.name}]\n"
        f"pg1-path={pg_data}\n"
        f"pg1-port={env.database.port}\n"
        f"pg1-socket-path={paths.socket}\n"
        f"pg1-user={env.database.superuser}\n"
    )


def pitr_settings(env: Environment, pitr: Pitr, pgbackrest: Path, paths: PitrPaths) -> list[str]:
    """The server's arguments: WAL for archiving, pushed by pgBackRest, and a socket folder for it."""
    push = shlex.join([str(pgbackrest), f"--config={paths.conf}", f"--stanza={env.name}", "archive-push"])
    return [
        "-c",
        f"unix_socket_directories={paths.socket}",
        "-c",
        "wal_level=replica",
        "-c",
        "archive_mode=on",
        "-c",
        f"archive_timeout={seconds(pitr.archive_timeout)}",
        "-c",
        f"archive_command={push} %p",
    ]


def pitr_offsite_path(env: Environment) -> str:
    """Where pgBackRest's repository lives in the offsite bucket: beside the environment's backups folder
    (`PREFIX/ENV/`), never inside it, where every folder is a backup of ours."""
    offsite = env.backup.offsite
    return f"/{offsite.prefix if offsite else ''}{env.name}.pgbackrest"


def _offsite_repo(env: Environment, pitr: Pitr, paths: PitrPaths, secrets: Secrets) -> str:
    offsite = env.backup.offsite
    if offsite is None or secrets.offsite is None:
        return ""
    from urllib.parse import urlsplit

    where = urlsplit(offsite.endpoint)
    key, secret = secrets.offsite
    lines = [
        "repo2-type=s3",
        f"repo2-path={pitr_offsite_path(env)}",
        f"repo2-s3-bucket={offsite.bucket}",
        f"repo2-s3-endpoint={where.hostname}",
        f"repo2-storage-port={where.port or 443}",
        f"repo2-s3-region={offsite.region}",
        f"repo2-s3-uri-style={'path' if offsite.path_style else 'host'}",
        f"repo2-s3-key={key.reveal()}",
        f"repo2-s3-key-secret={secret.reveal()}",
        f"repo2-retention-full={pitr.keep_full}",
    ]
    if offsite.ca_file is not None:
        lines.append(f"repo2-storage-ca-file={paths.offsite_ca}")
    return "".join(f"{line}\n" for line in lines)
