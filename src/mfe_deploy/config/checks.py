"""Rules that span several fields. Each returns (path, message) pairs; the loader adds file and line."""

from __future__ import annotations

from collections.abc import Iterator

from mfe_deploy.config.models import DATABASE_SERVICES, SERVICE_NAMES, Environment
from mfe_deploy.config.source import KeyPath

Finding = tuple[KeyPath, str]


def check(env: Environment) -> list[Finding]:
    return [*_services(env), *_ports(env), *_tier(env), *_secrets(env), *_nginx(env), *_database(env)]


def _services(env: Environment) -> Iterator[Finding]:
    for name in SERVICE_NAMES:
        if name not in env.services:
            yield ("services", name), "missing: every bundled service must be configured"


def _ports(env: Environment) -> Iterator[Finding]:
    claimed: list[tuple[KeyPath, int]] = [(("services", n, "port"), s.port) for n, s in env.services.items()]
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
            yield path, f"port {port} is already used by {first}"
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
    for name in DATABASE_SERVICES:
        if name not in env.secrets.databases:
            yield ("secrets", "databases", name), "missing: every service database needs a password reference"
    if env.uses_rabbitmq and env.secrets.rabbitmq_password is None:
        yield ("secrets", "rabbitmq_password"), "missing: event_hub is rabbitmq"


def _nginx(env: Environment) -> Iterator[Finding]:
    tls = env.nginx.tls
    if tls.mode == "files":
        for field in ("certificate", "key"):
            if getattr(tls, field) is None:
                yield ("nginx", "tls", field), "missing: tls mode 'files' needs a certificate and a key"


def _database(env: Environment) -> Iterator[Finding]:
    if env.database.layout == "per-service" and env.database.name is not None:
        yield ("database", "name"), "only the shared layout has a single database name"
