"""Connection URLs of the stack, for a given host name (a compose service name, or 127.0.0.1)."""

from __future__ import annotations

from urllib.parse import quote

from mfe_deploy.config.models import Environment
from mfe_deploy.config.secrets import Secrets
from mfe_deploy.exec.secret import Secret


def redis_url(env: Environment, secrets: Secrets, host: str, port: int | None = None) -> Secret:
    auth = "" if secrets.redis_password is None else ":" + quote(secrets.redis_password.reveal(), safe="") + "@"
    return Secret(f"redis://{auth}{host}:{port or env.redis.port}/0")


def redis_conf(secrets: Secrets) -> str:
    """Redis's own secret: the configuration it reads on its standard input (never an argument)."""
    assert secrets.redis_password is not None
    return f'requirepass "{secrets.redis_password.reveal()}"\n'


def database_url(env: Environment, secrets: Secrets, service: str, host: str, port: int | None = None) -> Secret:
    password = quote(secrets.databases[service].reveal(), safe="")
    role, db = env.database_role(service), env.database_name(service)
    return Secret(f"postgresql://{role}:{password}@{host}:{port or env.database.port}/{db}")


def rabbitmq_url(env: Environment, secrets: Secrets, service: str, host: str, port: int | None = None) -> Secret:
    """The service's own RabbitMQ user (its name), never the administrator."""
    password = quote(secrets.hub_users[service].reveal(), safe="")
    return Secret(f"amqp://{quote(service, safe='')}:{password}@{host}:{port or env.rabbitmq.port}/")
