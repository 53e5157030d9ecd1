"""Settings of one service, read once from the process environment (the env file mfe-deploy renders)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from mfe_services.common import tokens

_DURATION = re.compile(r"^([1-9][0-9]*)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(duration: str) -> int:
    match = _DURATION.match(duration)
    if not match:
        raise ValueError(f"not a duration like 15m or 7d: {duration!r}")
    return int(match[1]) * _UNIT[match[2]]


def _positive(value: str, name: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{name}: a positive number of bytes, not {value!r}")
    return int(value)


@dataclass(frozen=True)
class Route:
    """Where the gateway sends a path prefix, and which METHOD /path pairs there need no token."""

    prefix: str
    public: frozenset[tuple[str, str]] = frozenset()


def routes(raw: str | None, upstreams: Mapping[str, str]) -> dict[str, Route]:
    """ROUTES as mfe-deploy renders it: {"auth": {"prefix": "/api/auth", "public": ["POST /api/auth/login"]}}.
    An upstream it does not name is routed at /api/<name>, every path behind a token."""
    table: dict[str, Route] = {name: Route(f"/api/{name}") for name in upstreams}
    if not raw:
        return table
    try:
        data = json.loads(raw)
        for name, entry in data.items():
            public = frozenset(tuple(item.split(" ", 1)) for item in entry.get("public", []))
            table[name] = Route(str(entry["prefix"]), public)
    except (ValueError, AttributeError, KeyError, TypeError) as exc:
        raise ValueError(f"ROUTES: not the routes table mfe-deploy renders ({exc})") from None
    unknown = sorted(set(table) - set(upstreams))
    if unknown:
        raise ValueError(f"ROUTES names {', '.join(unknown)}, which have no _SERVICE_URL")
    return table


@dataclass(frozen=True)
class Settings:
    service: str
    port: int
    app_env: str = "development"
    log_level: str = "info"
    event_hub: str = "redis"
    keys: tokens.KeySet = field(default_factory=lambda: tokens.KeySet({}), repr=False)
    signer: tokens.Signer | None = field(default=None, repr=False)  # the issuer's only
    jwt_expires_in: int = 900
    jwt_refresh_expires_in: int = 604800
    cors_origin: str = ""
    database_url: str | None = field(default=None, repr=False)
    redis_url: str | None = None
    rabbitmq_url: str | None = field(default=None, repr=False)
    upstreams: Mapping[str, str] = field(default_factory=dict)
    routes: Mapping[str, Route] = field(default_factory=dict)
    version: str = "dev"
    max_body: int = 1 << 20
    sentry_dsn: str | None = field(default=None, repr=False)
    maintenance_file: str | None = None

    @classmethod
    def from_env(cls, service: str, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        upstreams = {
            key[: -len("_SERVICE_URL")].lower().replace("_", "-"): value
            for key, value in env.items()
            if key.endswith("_SERVICE_URL")
        }
        public = env.get("JWT_PUBLIC_KEYS", "")
        if not public:
            raise RuntimeError("JWT_PUBLIC_KEYS is not set")
        signing = env.get("JWT_SIGNING_KEY", "")
        return cls(
            service=service,
            port=int(env.get("PORT", "0")),
            app_env=env.get("APP_ENV", "development"),
            log_level=env.get("LOG_LEVEL", "info"),
            event_hub=env.get("EVENT_HUB", "redis"),
            keys=tokens.KeySet.parse(public),
            signer=tokens.Signer.parse(signing) if signing else None,
            jwt_expires_in=seconds(env.get("JWT_EXPIRES_IN", "15m")),
            jwt_refresh_expires_in=seconds(env.get("JWT_REFRESH_EXPIRES_IN", "7d")),
            cors_origin=env.get("CORS_ORIGIN", ""),
            database_url=env.get("DATABASE_URL") or None,
            redis_url=env.get("REDIS_URL") or None,
            rabbitmq_url=env.get("RABBITMQ_URL") or None,
            upstreams=dict(sorted(upstreams.items())),
            routes=routes(env.get("ROUTES"), upstreams),
            version=env.get("SERVICE_VERSION", "dev"),
            sentry_dsn=env.get("SENTRY_DSN") or None,
            maintenance_file=env.get("MAINTENANCE_FILE") or None,
            max_body=_positive(env.get("MAX_BODY_BYTES", str(1 << 20)), "MAX_BODY_BYTES"),
        )
