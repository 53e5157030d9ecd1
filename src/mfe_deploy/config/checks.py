"""Rules that span several fields. Each returns (path, message) pairs; the loader adds file and line."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from mfe_deploy.config.bundled import BUNDLED
from mfe_deploy.config.models import Environment, seconds
from mfe_deploy.config.source import KeyPath

Finding = tuple[KeyPath, str]


def check(env: Environment, written: Callable[[KeyPath], bool] = lambda path: True) -> list[Finding]:
    """Findings across keys. `written(path)`: whether a file sets that key (not a default), so that a
    clash is blamed on the line that holds a value."""
    return [
        *_services(env),
        *_ports(env, written),
        *_tier(env),
        *_secrets(env),
        *_nginx(env),
        *_database(env),
        *_jobs(env),
    ]


# What mfe-deploy itself sets in a service's environment: a service's `env:` cannot replace them.
RESERVED_ENV = frozenset(
    {
        "APP_ENV",
        "SERVICE_NAME",
        "PORT",
        "HOST",
        "LOG_LEVEL",
        "EVENT_HUB",
        "JWT_PUBLIC_KEYS",
        "JWT_EXPIRES_IN",
        "JWT_REFRESH_EXPIRES_IN",
        "CORS_ORIGIN",
        "DATABASE_URL",
        "REDIS_URL",
        "RABBITMQ_URL",
        "SENTRY_DSN",
        "SERVICE_VERSION",
        "MAINTENANCE_FILE",
        "ROUTES",
        "JWT_SIGNING_KEY",
        "STOP_TIMEOUT",
        "DRAIN_SECONDS",
    }
)


def _services(env: Environment) -> Iterator[Finding]:
    gateways = [name for name, svc in env.services.items() if svc.role == "gateway"]
    if not gateways:
        yield ("services",), "no service has role: gateway (the one entry point every route goes through)"
    for extra in gateways[1:]:
        yield ("services", extra, "role"), f"only one gateway: {gateways[0]} is one already"
    for name, svc in env.services.items():
        if svc.kind == "web" and env.runtime == "swarm" and seconds(svc.stop_timeout) < env.drain_seconds + 5:
            yield (
                ("services", name, "stop_timeout"),
                (
                    f"{svc.stop_timeout} leaves no time to finish requests after the swarm's drain "
                    f"({env.swarm.drain}, swarm.drain): make it at least {env.drain_seconds + 5}s, or the drain shorter"
                ),
            )
    issuer = env.services.get(env.jwt.issuer)
    if issuer is None:
        names = ", ".join(n for n, s in env.services.items() if s.role != "gateway") or "none"
        yield (
            ("jwt", "issuer"),
            (
                f"{env.jwt.issuer!r} is not a service of this environment: the issuer signs the access tokens "
                f"(default: auth, the bundled one); one of {names}"
            ),
        )
    elif issuer.role == "gateway":
        yield (
            ("jwt", "issuer"),
            (
                f"{env.jwt.issuer!r} is the gateway, which verifies tokens and never signs them: the issuer is a "
                "service that logs users in (default: auth, the bundled one)"
            ),
        )
    prefixes: dict[str, str] = {}
    for name, svc in env.services.items():
        if svc.bundled and name not in BUNDLED:
            yield ("services", name, "bundled"), f"mfe-deploy ships {', '.join(BUNDLED)}, not {name!r}"
        if not svc.bundled and svc.image is None and svc.build is None:
            yield ("services", name), "missing: image (a prebuilt image) or build (a Dockerfile of yours)"
        if svc.image is not None and svc.build is not None:
            yield ("services", name, "image"), "give image or build, not both"
        if svc.migrations is not None and not svc.database:
            yield ("services", name, "migrations"), "migrations need a database: set database: true"
        for dep in svc.depends_on:
            if dep not in env.services or dep == name:
                yield ("services", name, "depends_on"), f"{dep!r} is not another service of this environment"
        for key in svc.env:
            if key in RESERVED_ENV or key.endswith("_SERVICE_URL"):
                yield ("services", name, "env", key), "set by mfe-deploy itself; choose another name"
        if svc.role == "gateway":
            continue
        prefix = env.route_prefix(name)
        if prefix in prefixes:
            yield ("services", name, "routes", "prefix"), f"{prefix} is already routed to {prefixes[prefix]}"
        prefixes[prefix] = name
        for route in svc.routes.public:
            path = route.split(" ", 1)[1]
            if path != prefix and not path.startswith(prefix + "/"):
                yield ("services", name, "routes", "public"), f"{route!r} is not under {prefix}"


def _ports(env: Environment, written: Callable[[KeyPath], bool]) -> Iterator[Finding]:
    claimed: list[tuple[KeyPath, int]] = [(("services", n, "port"), s.http_port) for n, s in env.web_services.items()]
    claimed.append((("database", "port"), env.database.port))
    claimed.append((("redis", "port"), env.redis.port))
    if env.uses_rabbitmq:
        claimed.append((("rabbitmq", "port"), env.rabbitmq.port))
        claimed.append((("rabbitmq", "management_port"), env.rabbitmq.management_port))
    if env.nginx.enabled:
        claimed.append((("nginx", "http_port"), env.nginx.http_port))
        claimed.append((("nginx", "https_port"), env.nginx.https_port))
    owner: dict[int, KeyPath] = {}
    for path, port in claimed:
        if port in owner:
            first = ".".join(str(p) for p in owner[port])
            if written(path) or not written(owner[port]):
                yield path, f"port {port} is already used by {first}"
            else:  # this one is a default: the clash is the written value's
                yield owner[port], f"port {port} is already used by {'.'.join(map(str, path))} (its default)"
        else:
            owner[port] = path


def _tier(env: Environment) -> Iterator[Finding]:
    if env.tier != "development" and env.publish_ports:
        yield ("publish_ports",), f"ports are published only in development, not in {env.tier}"
    if env.publish_ports:
        for name, service in env.services.items():
            if service.replicas > 1:
                yield ("services", name, "replicas"), "replicas cannot share a published host port"
    if env.tier == "production" and not env.redis.persistence:
        yield ("redis", "persistence"), "production keeps Redis data: set persistence: true"


def _secrets(env: Environment) -> Iterator[Finding]:
    for name in env.database_services:
        if name not in env.secrets.databases:
            yield ("secrets", "databases", name), "missing: every service database needs a password reference"
    for name in env.secrets.databases:
        if name not in env.database_services:
            yield ("secrets", "databases", name), "no service of this environment owns this database"
    if env.uses_rabbitmq and env.secrets.rabbitmq_password is None:
        yield ("secrets", "rabbitmq_password"), "missing: event_hub is rabbitmq"
    if env.uses_rabbitmq and env.rabbitmq.user in env.hub_services:
        # Each service has a RabbitMQ user of its name: the administrator cannot be one of them.
        yield (
            ("rabbitmq", "user"),
            f"{env.rabbitmq.user!r} is the name of a service's own RabbitMQ user; choose another",
        )
    if env.tier != "development" and env.secrets.redis_password is None:
        yield ("secrets", "redis_password"), f"missing: Redis asks for a password in {env.tier}"


def _nginx(env: Environment) -> Iterator[Finding]:
    image = env.images.nginx
    if env.nginx.enabled and env.runtime != "local" and "alpine" in image.rpartition("/")[2]:
        yield (
            ("images", "nginx"),
            (
                f"{image}: nginx runs unprivileged through setpriv, which the -alpine images lack; "
                "use a Debian-based tag (nginx:1.27)"
            ),
        )
    tls = env.nginx.tls
    if env.nginx.enabled and tls.mode == "acme" and "*" in env.nginx.domain:
        yield ("nginx", "tls", "mode"), "acme answers http-01 challenges, which cannot prove a wildcard name"
    if env.nginx.enabled and tls.mode == "acme" and env.runtime == "swarm":
        yield ("nginx", "tls", "mode"), "acme is not available on the swarm runtime yet; use files"
    if tls.mode == "files":
        for field in ("certificate", "key"):
            if getattr(tls, field) is None:
                yield ("nginx", "tls", field), "missing: tls mode 'files' needs a certificate and a key"


def _database(env: Environment) -> Iterator[Finding]:
    if env.database.layout == "per-service" and env.database.name is not None:
        yield ("database", "name"), "only the shared layout has a single database name"
    offsite = env.backup.offsite
    if env.database.pitr is not None and offsite is not None and not offsite.endpoint.startswith("https://"):
        yield (
            ("backup", "offsite", "endpoint"),
            (
                "with database.pitr the WAL goes to the offsite store too, and pgBackRest speaks S3 over HTTPS "
                "only: give an https:// endpoint (and ca_file for a CA of your own)"
            ),
        )


def _jobs(env: Environment) -> Iterator[Finding]:
    for name, job in env.jobs.items():
        if job.service not in env.services:
            known = ", ".join(env.services)
            yield ("jobs", name, "service"), f"{job.service!r} is not a service of this environment ({known})"
