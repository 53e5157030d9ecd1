"""Environment + secrets -> Bundle ({relative path: file}). Pure: reads templates, writes nothing."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mfe_deploy.config import urls
from mfe_deploy.config.models import Environment, Service, seconds
from mfe_deploy.config.secrets import Secrets
from mfe_deploy.config.urls import DB_CA_IN_CONTAINER, DB_TLS_DIR, DB_TLS_IN_CONTAINER
from mfe_deploy.exec.secret import Secret
from mfe_deploy.exec.text import control_character

if TYPE_CHECKING:  # jinja2 loads when something is rendered, not for status, health or backups
    import jinja2

SERVICE_UID = "10001:10001"
# nginx in a container runs as this user (the official images' nginx) with no capability: it starts as
# root only to copy its certificate and key into NGINX_RUN (a tmpfs of its own, nginx's user's alone),
# then drops to that user (setpriv: Debian-based nginx images have it, the -alpine ones do not). Its ports
# are opened to it by the container's net.ipv4.ip_unprivileged_port_start; its pid file and temporary
# files are in NGINX_RUN too.
NGINX_UID = "101:101"
NGINX_RUN = "/run/nginx"
NGINX_HANDOVER = (
    f"set -eu; umask 077; mkdir -p {NGINX_RUN}/ssl; "
    f"cp /etc/nginx/ssl/cert.pem /etc/nginx/ssl/key.pem {NGINX_RUN}/ssl/; "
    f"chown -R {NGINX_UID} {NGINX_RUN}; chmod 0700 {NGINX_RUN}"
)
_UID, _GID = NGINX_UID.split(":")
# Its standard output and error are the engine's pipes, root's: handed over too (as the engine does for a
# container's own user), or nginx could not open /dev/stderr and /dev/stdout for its logs.
NGINX_START = (
    f"{NGINX_HANDOVER}; chown {NGINX_UID} /proc/self/fd/1 /proc/self/fd/2; "
    f'exec setpriv --reuid={_UID} --regid={_GID} --clear-groups "$$@"'
)
INFRA_CAPS = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID")
# Where a container finds its unit's env file: mounted, never its environment.
ENV_IN_CONTAINER = "/run/secrets/env"
# postgres and rabbitmq source it, then run their image's entrypoint (`$$`: compose interpolates `$`).
SOURCE_ENV = f"set -a; . {ENV_IN_CONTAINER}; set +a"
# PostgreSQL: the official image's entrypoint (and so its server, and every backend) keeps each variable it
# was given, the superuser's and the services' passwords included. So they are sourced only for the first
# start's init, run by the image's entrypoint as a child until its server answers (the child has exec'd into
# postgres, on its socket only), which is then stopped; every start ends in the image's entrypoint under
# `env -i`. Whatever the image does, the server's environment holds no secret.
POSTGRES_START = (
    'if [ ! -s "$$PGDATA/PG_VERSION" ]; then '
    f'({SOURCE_ENV}; exec "$$0" "$$@" -c listen_addresses=) & init=$$!; '
    'until [ "$$(cat /proc/$$init/comm 2>/dev/null)" = postgres ] && pg_isready -q -h /var/run/postgresql; do '
    "kill -0 $$init 2>/dev/null || exit 1; sleep 0.5; done; "
    "kill -INT $$init; wait $$init; fi; "
    'exec env -i PATH="$$PATH" PGDATA="$$PGDATA" LANG="$${LANG:-C.UTF-8}" "$$0" "$$@"'
)
# PostgreSQL's TLS (database.tls): the bundle's db-tls folder, mounted read-only into postgres; the key is
# copied by root into the server's in-memory socket folder, owned by the server's user (PostgreSQL refuses a
# key others can read, and the mounted one is root's). The services get the CA alone.
DB_KEY_IN_CONTAINER = "/var/run/postgresql/server.key"
DB_TLS_COPY = f"install -o postgres -g postgres -m 600 {DB_TLS_IN_CONTAINER}/server.key {DB_KEY_IN_CONTAINER}; "
DB_TLS_ARGS = [
    "-c",
    "ssl=on",
    "-c",
    f"ssl_cert_file={DB_TLS_IN_CONTAINER}/server.crt",
    "-c",
    f"ssl_key_file={DB_KEY_IN_CONTAINER}",
    "-c",
    f"hba_file={DB_TLS_IN_CONTAINER}/pg_hba.conf",
    "-c",
    "ssl_min_protocol_version=TLSv1.2",
]
# Who may connect how: the socket inside the container (its init, backups, psql through docker exec) as the
# images have it; over TCP, TLS with a password only; plain TCP refused, whoever asks.
DB_HBA = (
    "# mfe-deploy: database.tls is on. Over the network, TLS only.\n"
    "local all all trust\n"
    "hostssl all all all scram-sha-256\n"
    "hostnossl all all all reject\n"
)
# Redis reads its password from its configuration on standard input (`redis-server ... -`), opened by root
# before the image's entrypoint drops to the redis user: never an argument, never the environment.
REDIS_CONF = "env/redis.conf"
REDIS_STDIN = f'exec "$$0" "$$@" < {ENV_IN_CONTAINER}'
# RabbitMQ's administrator goes into a configuration file of its own (owned by the broker, mode 0600) in an
# in-memory conf.d, written by root before the image's entrypoint, which then runs without the password in its
# environment (the official image's entrypoint hands its environment to the broker: /proc/1/environ). The
# image's own conf.d is hidden by the tmpfs: the file holds the listener and loopback settings too. Its log
# folder is a tmpfs as well (the root is read-only), handed to the broker's user: Docker 20.10 ignores a
# tmpfs mode.
RABBITMQ_CONF_D = "/etc/rabbitmq/conf.d"
RABBITMQ_LOG_DIR = "/var/log/rabbitmq"
RABBITMQ_START = (
    f"{SOURCE_ENV}; umask 077; "
    'printf "%s\\n" "listeners.tcp.default = 5672" "loopback_users = none" "default_user = $$RABBITMQ_DEFAULT_USER" '
    f'"default_pass = $$RABBITMQ_DEFAULT_PASS" > {RABBITMQ_CONF_D}/90-mfe.conf; '
    f"chown rabbitmq:rabbitmq {RABBITMQ_CONF_D}/90-mfe.conf {RABBITMQ_LOG_DIR}; "
    "unset RABBITMQ_DEFAULT_USER RABBITMQ_DEFAULT_PASS; "
    f'export RABBITMQ_CONFIG_FILES={RABBITMQ_CONF_D} RABBITMQ_LOGS=-; exec "$$0" "$$@"'
)


@dataclass(frozen=True)
class Capabilities:
    """What the target engine supports. Docker Engine < 25 refuses healthcheck.start_interval."""

    healthcheck_start_interval: bool = True


@dataclass(frozen=True)
class Endpoints:
    """Where the services reach each other and the stores: compose service names on the internal
    network (standard ports inside containers), or 127.0.0.1 with the configured ports (local runtime)."""

    postgres: tuple[str, int]
    redis: tuple[str, int]
    rabbitmq: tuple[str, int]
    services: Mapping[str, tuple[str, int]]
    maintenance_file: str | None = None  # where the gateway looks for `mfe-deploy maintenance on`
    database_ca: str | None = None  # database.tls: the CA the services verify PostgreSQL's certificate with
    heartbeat_file: str | None = None  # a worker's (containers: each its own; local: set per worker)

    @classmethod
    def compose(cls, env: Environment) -> Endpoints:
        services: dict[str, tuple[str, int]] = {name: (name, svc.http_port) for name, svc in env.web_services.items()}
        ca = DB_CA_IN_CONTAINER if env.database_tls else None
        return cls(
            ("postgres", 5432),
            ("redis", 6379),
            ("rabbitmq", 5672),
            services,
            MAINTENANCE_IN_CONTAINER,
            ca,
            HEARTBEAT_IN_CONTAINER,
        )

    @classmethod
    def local(cls, env: Environment) -> Endpoints:
        services = {name: ("127.0.0.1", svc.http_port) for name, svc in env.web_services.items()}
        return cls(
            ("127.0.0.1", env.database.port),
            ("127.0.0.1", env.redis.port),
            ("127.0.0.1", env.rabbitmq.port),
            services,
        )


MAINTENANCE_DIR = "maintenance"  # in the bundle; mounted read-only into the gateway's container
MAINTENANCE_IN_CONTAINER = "/run/mfe/maintenance/maintenance.json"
HEARTBEAT_IN_CONTAINER = "/tmp/mfe-heartbeat"  # noqa: S108 - a worker container's own tmpfs


@dataclass(frozen=True)
class BundleFile:
    text: str
    secret: bool = False

    @property
    def mode(self) -> int:
        return 0o600 if self.secret else 0o644


@dataclass(frozen=True)
class Bundle:
    files: Mapping[str, BundleFile] = field(default_factory=dict)


def templates_dir() -> Path:
    packaged = Path(__file__).parent / "templates"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "templates"


def _bytecode_cache() -> jinja2.BytecodeCache | None:
    import jinja2

    """Compiling the templates costs more than rendering them; keep the compiled code per user.
    The folder is private (0700): compiled templates are code."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = base / "mfe-deploy" / f"jinja-{jinja2.__version__}"
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if folder.stat().st_uid != os.getuid() or folder.stat().st_mode & 0o077:
            return None
    except OSError:
        return None
    return jinja2.FileSystemBytecodeCache(str(folder))


@cache
def _jinja() -> jinja2.Environment:
    import jinja2

    env = jinja2.Environment(  # noqa: S701 - renders YAML, nginx and env files, never HTML
        loader=jinja2.FileSystemLoader(templates_dir()),
        bytecode_cache=_bytecode_cache(),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["json"] = lambda value: json.dumps(value)
    env.filters["envquote"] = _envquote
    return env


def _envquote(value: object) -> str:
    text = value.reveal() if isinstance(value, Secret) else str(value)
    if "'" in text or control_character(text) is not None:  # validation refuses both first: never reached
        raise ValueError("env file values cannot contain a single quote, a control character or a line separator")
    return f"'{text}'"


def render(
    env: Environment,
    secrets: Secrets,
    *,
    versions: Mapping[str, str] | None = None,
    caps: Capabilities = Capabilities(),
) -> Bundle:
    jinja = _jinja()
    env_tpl = jinja.get_template("service.env.j2")
    texts = {
        unit: env_tpl.render(env_name=env.name, unit=unit, variables=variables)
        for unit, variables in environments(env, secrets, Endpoints.compose(env)).items()
    }
    # A mounted file's change is invisible to compose: each container carries its file's digest in a label,
    # so that a changed file (a rotated secret, a route) is a changed container, recreated by `up`.
    secret_files = {f"env/{unit}.env": text for unit, text in texts.items()}
    if secrets.redis_password is not None:
        texts["redis"] = secret_files[REDIS_CONF] = urls.redis_conf(env, secrets)
    # The services' database passwords in postgres's file serve its first start's init only (a service added
    # later gets its role from `up`, provision_script): a new one is no reason to restart PostgreSQL.
    init_only = tuple(f"{_db_var(s)}=" for s in env.database_services)
    digested = dict(texts)
    if "postgres" in digested:
        lines = digested["postgres"].splitlines(keepends=True)
        digested["postgres"] = "".join(line for line in lines if not line.startswith(init_only))
    digests = {unit: hashlib.sha256(text.encode()).hexdigest()[:16] for unit, text in digested.items()}
    ctx = {**_context(env, versions or {}, caps), "env_digests": digests, "redis_conf": REDIS_CONF}
    files: dict[str, BundleFile] = {
        **{name: BundleFile(text, secret=True) for name, text in secret_files.items()},
        "compose.yml": BundleFile(jinja.get_template("compose.yml.j2").render(ctx)),
        "initdb/10-databases.sql": BundleFile(jinja.get_template("initdb.sql.j2").render(ctx)),
    }
    if env.database_tls:  # the certificate and key beside it are made by `up`, once (runtimes/docker)
        files[f"{DB_TLS_DIR}/pg_hba.conf"] = BundleFile(DB_HBA)
    if env.nginx.enabled:
        paths = NginxPaths(resolver="127.0.0.11", resolver_valid="1s", live_flag=GREEN_FLAG_IN_CONTAINER)
        files["nginx/nginx.conf"] = BundleFile(nginx_conf(env, paths, caps))
    if env.monitoring.enabled:
        targets = {name: (name, svc.http_port) for name, svc in env.web_services.items()}
        files["prometheus/prometheus.yml"] = BundleFile(prometheus_config(env, targets, dns=True))
    return Bundle(files=dict(sorted(files.items())))


@dataclass(frozen=True)
class NginxPaths:
    """Where nginx finds things: in its container (the defaults), or on this machine (local runtime)."""

    upstream: str | None = None  # where the gateway answers; default: its service name (compose DNS)
    ssl: str = f"{NGINX_RUN}/ssl"  # the copies NGINX_START makes, readable by nginx's user
    pid: str = f"{NGINX_RUN}/nginx.pid"
    mime_types: str = "/etc/nginx/mime.types"
    listen_http: str = "80"
    listen_https: str = "443"
    # The same ports on IPv6 (nginx.ipv6; reachable where the engine's network has IPv6); None: IPv4 only.
    listen_http6: str | None = "[::]:80"
    listen_https6: str | None = "[::]:443"
    # HTTP/2 as `http2 on;` (nginx 1.25.1+; `listen ... http2` is deprecated there) or as the listen
    # parameter (older nginx). None: from the nginx image's tag (a tag without a version: the parameter).
    http2_directive: bool | None = None
    temp: str | None = NGINX_RUN  # None: the paths nginx was built with
    resolver: str | None = None  # set: the gateway's name is resolved per request (Swarm), not once at load
    resolver_valid: str = "2s"
    # set (docker): the gateway's containers are reached by a colour's name, <gateway>-blue or -green, given
    # them on the live network once healthy; this file's presence says green is live (a switch, no reload).
    live_flag: str | None = None
    # Where nginx resolves the OCSP responder's name for stapling (tls.mode files): the engine's DNS in a
    # container; none on this machine (the local runtime), where a responder given by name is not stapled.
    dns: str | None = "127.0.0.11"
    # tls.mode acme: the folder holding .well-known/acme-challenge/ (the bundle's nginx/acme in a container).
    acme_root: str = "/etc/nginx/mfe/acme"


_NGINX_TAG = re.compile(r":(\d+)\.(\d+)(?:\.(\d+))?(?:[-.][A-Za-z0-9._-]*)?\Z")


def has_http2_directive(image: str) -> bool:
    """Whether the nginx of this image (by its tag: nginx:1.27, nginx:1.25.3-alpine) knows `http2 on;`."""
    match = _NGINX_TAG.search(image.rsplit("/", 1)[-1])
    if match is None:
        return False
    patch = int(match[3]) if match[3] is not None else 1 << 16  # nginx:1.25 is the newest 1.25.x
    return (int(match[1]), int(match[2]), patch) >= (1, 25, 1)


def nginx_conf(env: Environment, paths: NginxPaths, caps: Capabilities = Capabilities()) -> str:
    if paths.upstream is None:
        paths = dataclasses.replace(paths, upstream=env.gateway)
    target = "http://$mfe_gateway" if paths.resolver else "http://api_gateway"
    ipv6 = env.nginx.ipv6 and paths.listen_http6 is not None and paths.listen_https6 is not None
    http2_on = paths.http2_directive if paths.http2_directive is not None else has_http2_directive(env.images.nginx)
    return (
        _jinja()
        .get_template("nginx.conf.j2")
        .render(
            {
                **_context(env, {}, caps),
                "nginx_paths": paths,
                "proxy_target": target,
                "ipv6": ipv6,
                "http2_on": http2_on,
            }
        )
    )


# The docker runtime's nginx: its folder of the bundle is mounted here (a folder, not single files: a file
# mount keeps the inode it started with and never sees a rewritten file). The gateway's containers join the
# `live` network under a colour's name once healthy; which colour nginx sends requests to is a file's
# presence, checked per request: a gateway replacement switches colour without reloading nginx (a reload
# closes idle client keep-alive connections, and a request sent on one at that instant gets no answer).
NGINX_IN_CONTAINER = "/etc/nginx/mfe"
NGINX_CONF = f"{NGINX_IN_CONTAINER}/nginx.conf"
GREEN_FLAG = "nginx/live/green"
GREEN_FLAG_IN_CONTAINER = f"{NGINX_IN_CONTAINER}/live/green"
LIVE_NETWORK = "live"


def colour_name(env: Environment, colour: str) -> str:
    """The name the gateway's containers of one colour answer to on the live network."""
    return f"{env.gateway}-{colour}"


# The engine's bound on one check, exec included: a backstop, each check bounds its own wait (the web probe's
# socket 2 s, pg_isready's connect). `docker exec` alone took 1-2.4 s on a loaded CI-like host, so a 3 s bound
# failed checks whose answer was healthy (five in a row, and a new container was called unhealthy).
CHECK_BOUND = "10s"


# Failed checks count only after this: a start slower than it is a failure. A check that passes ends it at once,
# so it costs a healthy start nothing. 30 s was too short on a loaded 2-core CI host: four services started
# side by side took 33-49 s from their container's start to their first log line, and each was called
# unhealthy, then removed, while it was starting.
START_PERIOD = "60s"


def _healthcheck(
    test: list[str], caps: Capabilities, *, start_period: str = START_PERIOD, timeout: str = CHECK_BOUND
) -> dict[str, Any]:
    check: dict[str, Any] = {"test": test, "timeout": timeout, "retries": 5, "start_period": start_period}
    if caps.healthcheck_start_interval:
        check.update(interval="10s", start_interval="1s")
    else:
        check["interval"] = "2s"  # no fast start phase: keep the steady interval short instead
    return check


# RabbitMQ's check: the broker answers an AMQP 0-9-1 protocol header with a Connection.Start method frame
# (frame type 1); its listener opens once the node has booted. bash's /dev/tcp, in the official image and in
# ours. `rabbitmq-diagnostics ping` booted an Erlang VM per check: 0.73 s of CPU against this one's 0.09 s
# (docker exec included), every 2 s on Docker < 25: a third of a core per stack, on a 2-core CI machine.
def amqp_check(port: int = 5672) -> str:
    """The bash line of RabbitMQ's check, with compose's `$$` for each `$`."""
    return (
        f"exec 3<>/dev/tcp/127.0.0.1/{port} && printf 'AMQP\\0\\0\\11\\1' >&3"
        " && IFS= read -r -N 1 -t 5 frame <&3 && [ \"$$frame\" = $$'\\x01' ]"
    )


# A worker's check, inside its container (the engine's healthcheck and `health` alike): the age of its heartbeat
# file against the worker's `heartbeat` (argv[1]); prints `STATUS BODY` as a web probe does, exits 1 when stale.
HEARTBEAT_CHECK = (
    "import json, os, sys, time\n"
    f"f = os.environ.get('HEARTBEAT_FILE', {HEARTBEAT_IN_CONTAINER!r})\n"
    "try: age = time.time() - os.path.getmtime(f)\n"
    "except OSError: age = None\n"
    "ok = age is not None and age < float(sys.argv[1])\n"
    "body = {'status': 'healthy' if ok else 'unhealthy', 'heartbeat_age': None if age is None else round(age, 1)}\n"
    "print(200 if ok else 503, json.dumps(body))\n"
    "sys.exit(0 if ok else 1)\n"
)


def heartbeat_check(svc: Service) -> list[str]:
    return ["python3", "-c", HEARTBEAT_CHECK, str(seconds(svc.heartbeat))]


def service_probe(port: int, path: str) -> list[str]:
    """The engine's healthcheck of a web service, in its container: one GET on loopback over a plain socket,
    healthy on 200 (on anything else it prints the status line and the body's start, which the engine keeps
    in its health log). Python isolated and without site (-I -S), no urllib: on a busy host the imports cost more
    than the request, and a check that outlasts its timeout counts as failed (CI saw a new auth marked
    unhealthy while it answered /health 200 in 212 ms)."""
    code = (
        "import socket, sys\n"
        f"s = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
        f"s.sendall(b'GET {path} HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n')\n"
        "d = b''\n"
        "while b'\\r\\n' not in d:\n"
        "    c = s.recv(256)\n"
        "    if not c: break\n"
        "    d += c\n"
        "ok = d.split(b' ')[1:2] == [b'200']\n"
        "if not ok:\n"  # what answered, for the engine's health log (a 503 names the store it waits for)
        "    try:\n"
        "        while len(d) < 2048:\n"
        "            c = s.recv(2048)\n"
        "            if not c: break\n"
        "            d += c\n"
        "    except OSError: pass\n"
        "    h, _, b = d.partition(b'\\r\\n\\r\\n')\n"
        "    print(h.split(b'\\r\\n')[0].decode(errors='replace'), b[:300].decode(errors='replace'))\n"
        "sys.exit(not ok)\n"
    )
    return ["CMD", "python3", "-I", "-S", "-c", code]


def image_ref(env: Environment, service: str, version: str) -> str:
    """The image a service runs: its prebuilt `image`, or the one mfe-deploy builds and tags per version."""
    return env.services[service].image or f"{env.images.services_prefix}/{service}:{version}"


def _context(env: Environment, versions: Mapping[str, str], caps: Capabilities) -> dict[str, Any]:
    infra_deps = env.stores
    services = []
    for name, svc in env.services.items():
        gateway = svc.role == "gateway"
        services.append(
            {
                "name": name,
                "port": svc.port,
                "replicas": svc.replicas,
                "resources": svc.resources,
                "image": image_ref(env, name, versions.get(name, "latest")),
                "depends_on": [n for n in env.services if n != name] if gateway else [*infra_deps, *svc.depends_on],
                "networks": ["edge", "backend"] if gateway else ["backend", "data"],
                "healthcheck": _healthcheck(
                    service_probe(svc.http_port, svc.container_probe())
                    if svc.kind == "web"
                    else ["CMD", *heartbeat_check(svc)],
                    caps,
                ),
                "worker": svc.kind == "worker",
                "maintenance": gateway,
                "bundled": svc.bundled,
                "stop_timeout": svc.stop_timeout,
                "database_ca": svc.database and env.database_tls,
            }
        )
    hsts = f"max-age={env.nginx.hsts_max_age}" + ("; includeSubDomains" if env.nginx.hsts_include_subdomains else "")
    return {
        "env": env,
        "hsts": hsts,
        "project_name": f"{env.project}-{env.name}",
        "services": services,
        "service_user": SERVICE_UID,
        "env_in_container": ENV_IN_CONTAINER,
        "postgres_start": (DB_TLS_COPY if env.database_tls else "") + POSTGRES_START,
        "postgres_command": ["postgres", *(DB_TLS_ARGS if env.database_tls else [])],
        "db_tls": env.database_tls,
        "db_tls_dir": DB_TLS_DIR,
        "db_tls_in_container": DB_TLS_IN_CONTAINER,
        "db_ca_in_container": DB_CA_IN_CONTAINER,
        "redis_stdin": REDIS_STDIN,
        "rabbitmq_start": RABBITMQ_START,
        "rabbitmq_tmpfs": [RABBITMQ_CONF_D, RABBITMQ_LOG_DIR],
        "infra_caps": INFRA_CAPS,
        "nginx_start": NGINX_START,
        "nginx_uid": NGINX_UID,
        "nginx_run": NGINX_RUN,
        "data_internal": not env.publish_ports,
        "db_superuser": env.database.superuser,
        "bootstrap_db": _bootstrap_db(env),
        "databases": [
            {"service": s, "name": env.database_name(s), "role": env.database_role(s), "var": _db_var(s)}
            for s in env.database_services
        ],
        "gateway": env.services[env.gateway] if env.gateway else None,
        "gateway_name": env.gateway,
        "health": {
            "postgres": _healthcheck(
                ["CMD", "pg_isready", "-h", "127.0.0.1", "-U", env.database.superuser, "-d", "postgres"], caps
            ),
            # An answer is health: PONG, or NOAUTH when it asks for the password the probe does not hold.
            "redis": _healthcheck(["CMD-SHELL", "redis-cli ping | grep -qE '^(PONG|NOAUTH)'"], caps),
            "rabbitmq": _healthcheck(["CMD", "bash", "-c", amqp_check()], caps, start_period="90s"),
            # Its master is not root's: the probe (root, without CAP_KILL) cannot signal it, only look it up.
            "nginx": _healthcheck(
                ["CMD-SHELL", f'test -s {NGINX_RUN}/nginx.pid && test -e "/proc/$$(cat {NGINX_RUN}/nginx.pid)/status"'],
                caps,
            ),
            # promtool ships in the official image (and in ours): a real query, not just an open port.
            "prometheus": _healthcheck(
                ["CMD", "promtool", "query", "instant", "http://127.0.0.1:9090", "vector(1)"], caps
            ),
        },
    }


def _db_var(service: str) -> str:
    return f"MFE_{service.upper().replace('-', '_')}_DB_PASSWORD"


def _bootstrap_db(env: Environment) -> str:
    """The database the postgres container creates first: the shared one, or postgres."""
    return env.database.name or f"universal_mfe_{env.name}" if env.database.layout == "shared" else "postgres"


def routes(env: Environment) -> str:
    """What the gateway forwards where, and which METHOD /path pairs need no token (JSON, for ROUTES)."""
    table = {
        name: {"prefix": env.route_prefix(name), "public": list(svc.routes.public)}
        for name, svc in env.web_services.items()
        if svc.role != "gateway"
    }
    return json.dumps(table, separators=(",", ":"))


def environments(env: Environment, secrets: Secrets, at: Endpoints) -> dict[str, list[tuple[str, object]]]:
    """The process environment of every unit (services, postgres, rabbitmq); secrets stay Secret."""
    pg, rmq = env.database, env.rabbitmq
    files: dict[str, list[tuple[str, object]]] = {
        "postgres": [
            ("POSTGRES_USER", pg.superuser),
            ("POSTGRES_PASSWORD", secrets.postgres_password),
            ("POSTGRES_DB", _bootstrap_db(env)),
            *((_db_var(s), secrets.databases[s]) for s in env.database_services),
        ]
    }
    if env.uses_rabbitmq:
        assert secrets.rabbitmq_password is not None  # guaranteed by config checks
        files["rabbitmq"] = [
            ("RABBITMQ_DEFAULT_USER", rmq.user),
            ("RABBITMQ_DEFAULT_PASS", secrets.rabbitmq_password),
        ]
    for name, svc in env.services.items():
        variables: list[tuple[str, object]] = [
            ("APP_ENV", env.name),
            ("SERVICE_NAME", name),
            *([("PORT", svc.port)] if svc.kind == "web" else []),
            *([("HEARTBEAT_FILE", at.heartbeat_file)] if svc.kind == "worker" and at.heartbeat_file else []),
            ("LOG_LEVEL", env.log_level),
            ("EVENT_HUB", env.event_hub),
            ("JWT_PUBLIC_KEYS", secrets.public_keys),
            ("JWT_EXPIRES_IN", env.jwt.expires_in),
            ("JWT_REFRESH_EXPIRES_IN", env.jwt.refresh_expires_in),
            ("CORS_ORIGIN", env.cors_origin),
            ("STOP_TIMEOUT", seconds(svc.stop_timeout)),
            ("DRAIN_SECONDS", env.drain_seconds),
        ]
        if name == env.jwt.issuer:
            variables.append(("JWT_SIGNING_KEY", secrets.signing_key.private))
        if svc.role == "gateway" and at.maintenance_file:
            variables.append(("MAINTENANCE_FILE", at.maintenance_file))
        if svc.role == "gateway":
            variables += [
                (f"{other.upper().replace('-', '_')}_SERVICE_URL", "http://{}:{}".format(*at.services[other]))
                for other in env.web_services
                if other != name
            ]
            variables.append(("ROUTES", routes(env)))
        else:
            if svc.database:
                url = urls.database_url(env, secrets, name, *at.postgres, ca=at.database_ca)
                variables.append(("DATABASE_URL", url))
            variables.append(("REDIS_URL", urls.redis_url(env, secrets, name, *at.redis)))
            if env.uses_rabbitmq:
                variables.append(("RABBITMQ_URL", urls.rabbitmq_url(env, secrets, name, *at.rabbitmq)))
        if secrets.sentry_dsn is not None:
            variables.append(("SENTRY_DSN", secrets.sentry_dsn))
        variables += sorted(svc.env.items())
        files[name] = variables
    return files


def prometheus_config(env: Environment, targets: Mapping[str, tuple[str, int]], *, dns: bool = False) -> str:
    """Prometheus scraping every service's /metrics: one job per service. `dns`: the target's name is
    looked up for every address it has (compose answers one A record per replica), so that each replica
    is scraped, not whichever one a connection happens to reach."""
    lines = [
        f"# Rendered by mfe-deploy for {env.name}: Prometheus scraping the services' /metrics.",
        "global:",
        f"  scrape_interval: {env.monitoring.scrape_interval}",
        f"  scrape_timeout: {min(10, seconds(env.monitoring.scrape_interval))}s",
        "  external_labels:",
        f"    environment: {json.dumps(env.name)}",
        "scrape_configs:",
    ]
    for name, (address, port) in targets.items():
        lines += [f"  - job_name: {json.dumps(name)}", "    metrics_path: /metrics"]
        if dns:
            lines.append(
                f"    dns_sd_configs: [{{names: [{json.dumps(address)}], type: A, port: {port}, refresh_interval: 5s}}]"
            )
        else:
            lines.append(f"    static_configs: [{{targets: [{json.dumps(f'{address}:{port}')}]}}]")
    return "\n".join(lines) + "\n"


def provision_script(env: Environment, secrets: Secrets, tag: str) -> Secret:
    """What every `up` runs as the superuser once PostgreSQL answers (psql, the script on its standard input:
    it holds passwords): each database service's role, database (or schema) and grants, created only when
    missing, so that a service added to a running stack gets them (the init script runs on an empty cluster
    only). A role that exists is left as it is. `tag`: a dollar-quote tag no password holds."""

    def literal(value: str) -> str:
        return "'" + value.replace("'", "''") + "'"

    def name(value: str) -> str:
        return '"' + value.replace('"', '""') + '"'

    lines = ["\\set ON_ERROR_STOP on"]
    for service in env.database_services:
        role, password = env.database_role(service), secrets.databases[service].reveal()
        if f"${tag}$" in password:
            raise ValueError("the dollar-quote tag occurs in a password")
        lines.append(
            f"DO ${tag}$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {literal(role)}) THEN "
            f"CREATE ROLE {name(role)} LOGIN PASSWORD {literal(password)}; END IF; END ${tag}$;"
        )
    lines += [
        "REVOKE CONNECT, TEMPORARY ON DATABASE postgres FROM PUBLIC;",
        "REVOKE CONNECT, TEMPORARY ON DATABASE template1 FROM PUBLIC;",
    ]
    if env.database.layout == "per-service":
        for service in env.database_services:
            db, role = env.database_name(service), env.database_role(service)
            create = f"'CREATE DATABASE ' || quote_ident({literal(db)}) || ' OWNER ' || quote_ident({literal(role)})"
            missing = f"NOT EXISTS (SELECT FROM pg_database WHERE datname = {literal(db)})"
            lines += [
                f"SELECT {create} WHERE {missing} \\gexec",
                f"REVOKE ALL ON DATABASE {name(db)} FROM PUBLIC;",
                f"GRANT CONNECT, TEMPORARY ON DATABASE {name(db)} TO {name(role)};",
                f"\\connect {name(db)}",
                "REVOKE ALL ON SCHEMA public FROM PUBLIC;",
                f"ALTER SCHEMA public OWNER TO {name(role)};",
            ]
    else:
        shared = _bootstrap_db(env)
        lines += [f"REVOKE ALL ON DATABASE {name(shared)} FROM PUBLIC;", f"\\connect {name(shared)}"]
        lines.append("REVOKE ALL ON SCHEMA public FROM PUBLIC;")
        for service in env.database_services:
            role = env.database_role(service)
            lines += [
                f"GRANT CONNECT, TEMPORARY ON DATABASE {name(shared)} TO {name(role)};",
                f"CREATE SCHEMA IF NOT EXISTS {name(service)} AUTHORIZATION {name(role)};",
                f"ALTER ROLE {name(role)} IN DATABASE {name(shared)} SET search_path = {name(service)};",
            ]
    return Secret("\n".join(lines) + "\n")
