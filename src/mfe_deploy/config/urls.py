"""Connection URLs of the stack, for a given host name (a compose service name, or 127.0.0.1)."""

from __future__ import annotations

from urllib.parse import quote

from mfe_deploy.config.models import Environment
from mfe_deploy.config.secrets import Secrets
from mfe_deploy.exec.secret import Secret


def redis_url(env: Environment, host: str, port: int | None = None) -> str:
    return f"redis://{host}:{port or env.redis.port}/0"


def database_url(env: Environment, secrets: Secrets, service: str, host: str, port: int | None = None) -> Secret:
    password = quote(secrets.databases[service].reveal(), safe="")
    role, db = env.database_role(service), env.database_name(service)
    return Secret(f"postgresql://{role}:{password}@{host}:{port or env.database.port}/{db}")


def rabbitmq_url(env: Environment, secrets: Secrets, host: str, port: int | None = None) -> Secret:
    assert secrets.rabbitmq_password is not None  # guaranteed by the config checks when the hub is rabbitmq
    password = quote(secrets.rabbitmq_password.reveal(), safe="")
    return Secret(f"amqp://{env.rabbitmq.user}:{password}@{host}:{port or env.rabbitmq.port}/")
