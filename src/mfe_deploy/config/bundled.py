"""The services mfe-deploy ships (the mfe_services package) as a layer of defaults.

An environment names its services; for a name below, whatever the environment leaves unset comes from
here. Nothing else in mfe-deploy knows these names: the gateway is a role, a database is a flag."""

from __future__ import annotations

from typing import Any

AUTH_PUBLIC = ("POST /api/auth/register", "POST /api/auth/login", "POST /api/auth/refresh", "POST /api/auth/logout")

BUNDLED: dict[str, dict[str, Any]] = {
    "api-gateway": {"role": "gateway", "bundled": True},
    "auth": {"bundled": True, "database": True, "routes": {"public": list(AUTH_PUBLIC)}},
    "payments": {"bundled": True, "database": True},
    "admin": {"bundled": True, "database": True},
    "profile": {"bundled": True, "database": True},
    # A worker (no HTTP): every event once, counted in its own database. Not in the guide's stack: an
    # environment that names it gets it (`services: {activity: {}}` and secrets.databases.activity).
    "activity": {"bundled": True, "database": True, "kind": "worker"},
}


def with_bundled_defaults(data: Any) -> Any:
    """The environment's raw data with each bundled service's defaults under what it sets. A service
    set to null (`notifications: ~` in a layer that extends another) is removed, and so is a database
    password reference set to null."""
    if not isinstance(data, dict) or not isinstance(data.get("services"), dict):
        return data
    secrets = data.get("secrets")
    if isinstance(secrets, dict) and isinstance(secrets.get("databases"), dict):
        kept = {name: ref for name, ref in secrets["databases"].items() if ref is not None}
        data = {**data, "secrets": {**secrets, "databases": kept}}
    services = {}
    for name, value in data["services"].items():
        if value is None:
            continue
        if isinstance(value, dict) and name in BUNDLED:
            value = _merge(BUNDLED[name], value)
        services[name] = value
    return {**data, "services": services}


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(out.get(key), dict) and isinstance(value, dict) else value
    return out
