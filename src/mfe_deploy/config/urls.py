"""Connection URLs of the stack, for a given host name (a compose service name, or 127.0.0.1)."""

from __future__ import annotations

import hashlib
from urllib.parse import quote

from mfe_deploy.config.models import Environment
from mfe_deploy.config.secrets import Secrets
from mfe_deploy.exec.secret import Secret


def redis_url(env: Environment, secrets: Secrets, service: str, host: str, port: int | None = None) -> Secret:
    """The service's own Redis user (its name) when Redis asks for passwords; no user in development."""
    if secrets.redis_password is None:
        return Secret(f"redis://{host}:{port or env.redis.port}/0")
    password = quote(secrets.redis_users[service].reveal(), safe="")
    return Secret(f"redis://{quote(service, safe='')}:{password}@{host}:{port or env.redis.port}/0")


# database.tls: the bundle's folder of PostgreSQL's certificate, key and rules, where postgres sees it, and
# where the services find the CA they verify the server with.
DB_TLS_DIR = "db-tls"
DB_TLS_IN_CONTAINER = "/etc/mfe/db-tls"
DB_CA_IN_CONTAINER = "/etc/mfe/db-ca.pem"

OPERATOR = "mfe.operator"  # not a service's name: a service's name has no dot
STREAM = "mfe:events"  # the Redis Streams hub's one stream (mfe_services.common.events.STREAM)


def redis_conf(env: Environment, secrets: Secrets) -> str:
    """Redis's users, the configuration it reads (from its standard input or a 0600 file, never an argument).
    The default user is off. The operator's user (redis_password) may do anything; each service's user
    reaches only its own keys (`SERVICE:*`), the event stream and its own dead letters, with no dangerous,
    scripting, pub/sub or key-listing command: a service cannot read or delete another's keys. Passwords
    are kept as their SHA-256 (`#`), never in the clear."""
    assert secrets.redis_password is not None

    def digest(secret: Secret) -> str:
        return "#" + hashlib.sha256(secret.reveal().encode()).hexdigest()

    lines = ["user default off", f"user {OPERATOR} on {digest(secrets.redis_password)} ~* &* +@all"]
    for name, password in sorted(secrets.redis_users.items()):
        keys = f"~{name}:* ~{STREAM} ~{STREAM}:dead:{name}"
        commands = "+@all -@dangerous -@scripting -@pubsub -scan -randomkey -select"
        lines.append(f"user {name} on {digest(password)} resetchannels {keys} {commands}")
    return "\n".join(lines) + "\n"


def database_url(
    env: Environment, secrets: Secrets, service: str, host: str, port: int | None = None, *, ca: str | None = None
) -> Secret:
    """`ca`: database.tls, where the CA file is: the connection is TLS, the server's name checked against it."""
    password = quote(secrets.databases[service].reveal(), safe="")
    role, db = env.database_role(service), env.database_name(service)
    tls = f"?sslmode=verify-full&sslrootcert={quote(ca)}" if ca else ""
    return Secret(f"postgresql://{role}:{password}@{host}:{port or env.database.port}/{db}{tls}")


def rabbitmq_url(env: Environment, secrets: Secrets, service: str, host: str, port: int | None = None) -> Secret:
    """The service's own RabbitMQ user (its name), never the administrator."""
    password = quote(secrets.hub_users[service].reveal(), safe="")
    return Secret(f"amqp://{quote(service, safe='')}:{password}@{host}:{port or env.rabbitmq.port}/")
