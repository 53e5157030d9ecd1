"""Resolving secret references and enforcing the secrets policy.

A Secret never shows its value in str() or repr(); code that needs the value calls reveal().
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mfe_deploy.config import jwtkeys
from mfe_deploy.config.jwtkeys import JwtKey
from mfe_deploy.config.models import Environment, SecretRef
from mfe_deploy.config.providers import providers
from mfe_deploy.config.source import KeyPath
from mfe_deploy.exec.secret import Secret
from mfe_deploy.exec.text import control_character

KNOWN_DEFAULTS = frozenset(
    {
        "dev-secret-key",
        "postgres",
        "admin",
        "password",
        "secret",
        "changeme",
        "change-me",
        "guest",
        "root",
        "123456",
        "12345678",
        "qwerty",
        "letmein",
        "default",
        "test",
        "example",
        "mfe",
    }
)
SENTRY_DSN = re.compile(r"https?://[^@/\s:]+(:[^@/\s]*)?@[^/\s]+/([^\s]*/)?[0-9]+")
MIN_PASSPHRASE = 16


@dataclass(frozen=True)
class Secrets:
    jwt_keys: tuple[JwtKey, ...]  # every key the services accept; the first, or jwt.signing_key, signs
    postgres_password: Secret
    databases: Mapping[str, Secret]
    rabbitmq_password: Secret | None
    sentry_dsn: Secret | None
    redis_password: Secret | None = None
    backup_passphrase: Secret | None = None
    webhooks: tuple[Secret, ...] = ()  # notify.webhooks[i].url, in order
    # Values that came from a documented development default (`${VAR:-value}`): public, not masked.
    public: frozenset[str] = frozenset()
    signing_kid: str = ""
    # Each service's own RabbitMQ password, derived from rabbitmq_password (nothing more to configure).
    hub_users: Mapping[str, Secret] = field(default_factory=dict)
    # Each service's own Redis user's password, derived from redis_password the same way.
    redis_users: Mapping[str, Secret] = field(default_factory=dict)
    # backup.offsite's access key id and secret access key
    offsite: tuple[Secret, Secret] | None = None

    @property
    def signing_key(self) -> JwtKey:
        return next((k for k in self.jwt_keys if k.kid == self.signing_kid), self.jwt_keys[0])

    @property
    def public_keys(self) -> str:
        """JWT_PUBLIC_KEYS: what every service verifies with."""
        return ",".join(key.public for key in self.jwt_keys)

    def maskable(self) -> list[str]:
        """What the printer must hide: every real secret value (very short ones would mask ordinary words),
        and a signing key's private half on its own too (the kid before it is public)."""
        values = [s.reveal() for s in self.values()] + [k.private.reveal().partition(":")[2] for k in self.jwt_keys]
        derived = [*self.hub_users.values(), *self.redis_users.values()]
        values += [s.reveal() for s in derived]  # derived, not configured: masked all the same
        return [v for v in values if v not in self.public and len(v) >= 6]

    def values(self) -> list[Secret]:
        out = [*(k.private for k in self.jwt_keys), self.postgres_password, *self.databases.values(), *self.webhooks]
        optional = (self.rabbitmq_password, self.redis_password, self.sentry_dsn, self.backup_passphrase)
        return out + [s for s in optional if s is not None] + list(self.offsite or ())


# Secrets whose absence only switches a feature off (no DSN: no Sentry).
OPTIONAL: frozenset[KeyPath] = frozenset({("secrets", "sentry_dsn")})


def refs(env: Environment) -> Iterator[tuple[KeyPath, SecretRef]]:
    s = env.secrets
    for index, ref in enumerate(s.jwt_keys):
        yield ("secrets", "jwt_keys", index), ref
    yield ("secrets", "postgres_password"), s.postgres_password
    for name, ref in sorted(s.databases.items()):
        yield ("secrets", "databases", name), ref
    if s.rabbitmq_password is not None and env.uses_rabbitmq:
        yield ("secrets", "rabbitmq_password"), s.rabbitmq_password
    if s.redis_password is not None:
        yield ("secrets", "redis_password"), s.redis_password
    if s.sentry_dsn is not None:
        yield ("secrets", "sentry_dsn"), s.sentry_dsn
    if s.backup_passphrase is not None:
        yield ("secrets", "backup_passphrase"), s.backup_passphrase
    for index, hook in enumerate(env.notify.webhooks):
        yield ("notify", "webhooks", index, "url"), hook.url
    offsite = env.backup.offsite
    if offsite is not None:
        yield ("backup", "offsite", "access_key_id"), offsite.access_key_id
        yield ("backup", "offsite", "secret_access_key"), offsite.secret_access_key


def resolve(
    env: Environment, environ: Mapping[str, str], project_dir: Path
) -> tuple[Secrets | None, list[tuple[KeyPath, str]]]:
    """Read every referenced secret and apply the policy of the environment's tier."""
    strict = env.tier != "development"
    values: dict[KeyPath, Secret] = {}
    public: set[str] = set()
    problems: list[tuple[KeyPath, str]] = []
    sources = providers(environ, project_dir)
    for path, ref in refs(env):
        if ref.provider is not None:
            assert ref.path is not None and ref.key is not None
            value, problem = sources[ref.provider].read(ref.path, ref.key)
            problem = f"{ref.describe()}: {problem}" if problem else None
        else:
            value, problem = _read(ref, environ, project_dir, strict)
        if path in OPTIONAL and value is None and ref.env is not None and ref.default is None:
            continue
        if problem is None and value is not None:
            problem = _policy(path, value, strict, env.tier)
        if problem is not None:
            problems.append((path, problem))
        elif value is not None:
            values[path] = Secret(value)
            if ref.default is not None and value == ref.default:
                public.add(value)
    keys = _jwt_keys(env, values, problems)
    if problems:
        return None, problems
    s = env.secrets
    return (
        Secrets(
            jwt_keys=keys,
            signing_kid=env.jwt.signing_key or keys[0].kid,
            postgres_password=values[("secrets", "postgres_password")],
            databases={name: values[("secrets", "databases", name)] for name in sorted(s.databases)},
            rabbitmq_password=values.get(("secrets", "rabbitmq_password")),
            redis_password=values.get(("secrets", "redis_password")),
            sentry_dsn=values.get(("secrets", "sentry_dsn")),
            backup_passphrase=values.get(("secrets", "backup_passphrase")),
            webhooks=tuple(values[("notify", "webhooks", i, "url")] for i in range(len(env.notify.webhooks))),
            public=frozenset(public),
            hub_users=_hub_users(env, values.get(("secrets", "rabbitmq_password"))),
            redis_users=_redis_users(env, values.get(("secrets", "redis_password"))),
            offsite=(
                (values[("backup", "offsite", "access_key_id")], values[("backup", "offsite", "secret_access_key")])
                if env.backup.offsite is not None
                else None
            ),
        ),
        [],
    )


def _derived(admin: Secret, store: str, names: list[str]) -> dict[str, Secret]:
    """A password per service, an HMAC of the administrator's: rotating the one rotates them all, nothing
    more to configure, and no service holds the administrator's."""
    users = {}
    for name in names:
        mac = hmac.new(admin.reveal().encode(), f"mfe-deploy {store} user {name}".encode(), hashlib.sha256)
        users[name] = Secret(base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode())
    return users


def _hub_users(env: Environment, admin: Secret | None) -> dict[str, Secret]:
    """A RabbitMQ user per service that uses the hub (the gateway does not)."""
    if admin is None or not env.uses_rabbitmq:
        return {}
    return _derived(admin, "rabbitmq", env.hub_services)


def _redis_users(env: Environment, admin: Secret | None) -> dict[str, Secret]:
    """A Redis user per service that reaches Redis (all but the gateway), when Redis asks for passwords."""
    if admin is None:
        return {}
    return _derived(admin, "redis", env.hub_services)


def _jwt_keys(
    env: Environment, values: dict[KeyPath, Secret], problems: list[tuple[KeyPath, str]]
) -> tuple[JwtKey, ...]:
    """The signing keys, each parsed; kids unique; jwt.signing_key one of them."""
    keys: list[JwtKey] = []
    for index in range(len(env.secrets.jwt_keys)):
        path: KeyPath = ("secrets", "jwt_keys", index)
        if path not in values:
            continue
        key = jwtkeys.parse(values[path].reveal())
        if isinstance(key, str):
            problems.append((path, key))
        elif any(other.kid == key.kid for other in keys):
            problems.append((path, f"a second key named {key.kid}: each key needs its own kid"))
        elif env.tier != "development" and jwtkeys.DEVELOPMENT_KEY.split(":")[1] in values[path].reveal():
            problems.append((path, f"the documented development key, refused in {env.tier}"))
        else:
            keys.append(key)
    if not env.secrets.jwt_keys:
        problems.append((("secrets", "jwt_keys"), "no key: list at least one (mfe-deploy keys new --out FILE)"))
    wanted = env.jwt.signing_key
    if not problems and wanted is not None and all(key.kid != wanted for key in keys):
        problems.append((("jwt", "signing_key"), f"no key of secrets.jwt_keys is named {wanted}"))
    return tuple(keys)


def _read(ref: SecretRef, environ: Mapping[str, str], project_dir: Path, strict: bool) -> tuple[str | None, str | None]:
    if ref.file is not None:
        path = Path(ref.file)
        path = path if path.is_absolute() else project_dir / path
        try:
            return path.read_text(encoding="utf-8").rstrip("\r\n"), None
        except OSError as exc:
            return None, f"cannot read secret file {ref.file}: {exc.strerror}"
    assert ref.env is not None
    if ref.default is not None and strict:
        return None, f"${{{ref.env}:-...}}: defaults are not allowed outside development"
    value = environ.get(ref.env)
    if value is None or value == "":
        if ref.default is not None:
            return ref.default, None
        return (
            None,
            f"environment variable {ref.env} is not set: export it where mfe-deploy runs (in CI, a secret variable)",
        )
    return value, None


def _policy(path: KeyPath, value: str, strict: bool, tier: str) -> str | None:
    found = control_character(value)
    if found is not None:
        return f"the value holds a control character or line separator ({found}), which env files cannot carry"
    if "'" in value:
        return "the value contains a single quote, which env files cannot carry safely"
    if path == ("secrets", "redis_password") and any(c in value for c in '"\\ '):
        return "a Redis password cannot contain a space, a double quote or a backslash"
    if path[0] == "notify" and not value.startswith(("https://", "http://")):
        return "a webhook URL starts with https:// (or http://)"
    if path == ("secrets", "sentry_dsn") and not SENTRY_DSN.fullmatch(value):
        return "a Sentry DSN looks like https://<public key>@<host>/<project id>"
    if not strict:
        return None
    if value.lower() in KNOWN_DEFAULTS:
        return f"the value is a well-known default, refused in {tier}"
    if path == ("secrets", "backup_passphrase") and len(value) < MIN_PASSPHRASE:
        return f"a backup passphrase must be at least {MIN_PASSPHRASE} characters in {tier}"
    return None
