"""The whole backend on real servers: PostgreSQL, Redis, RabbitMQ (or the Redis hub) and the five
services as uvicorn processes on loopback, configured from an environment file like any other."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from mfe_deploy.config import loader
from mfe_deploy.config.models import Environment
from mfe_deploy.config.secrets import Secrets
from mfe_deploy.exec.secret import Secret
from mfe_deploy.hub import definitions as hub_definitions
from mfe_deploy.render import Endpoints, environments, render
from tests.conftest import REPO
from tests.pg import Cluster, free_port, temp_cluster
from tests.servers import RabbitMQ, Redis, rabbitmq_server, redis_server, wait_until

ADMIN = "admin@example.com"


def admin_headers(gw: httpx.Client, cli: Callable[..., subprocess.CompletedProcess[str]], env: str) -> dict[str, str]:
    """Registers ADMIN (once), has the operator grant it the admin role, logs in: the only way to an admin."""
    registered = gw.post("/api/auth/register", json={"email": ADMIN, "password": "admin password"})
    assert registered.status_code in (201, 409), registered.text
    granted = cli("admin", "grant", ADMIN, "--env", env)
    assert granted.returncode == 0, granted.stdout + granted.stderr
    token = gw.post("/api/auth/login", json={"email": ADMIN, "password": "admin password"}).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


SERVICES = ("auth", "payments", "admin", "profile", "api-gateway")
STACK_SECRETS = {
    "ITEST_JWT_KEY": "itest:itest-jwt-key-0123456789abcdef0123456789abc",
    "ITEST_POSTGRES_PASSWORD": "itest-postgres-password-0123456789",
    "ITEST_RABBITMQ_PASSWORD": "itest-rabbitmq-password-0123456789",
    "ITEST_AUTH_DB_PASSWORD": "itest-auth-db-password-0123456789",
    "ITEST_PAYMENTS_DB_PASSWORD": "itest-payments-db-password-0123456789",
    "ITEST_ADMIN_DB_PASSWORD": "itest-admin-db-password-0123456789",
    "ITEST_PROFILE_DB_PASSWORD": "itest-profile-db-password-0123456789",
}


def environment_yaml(ports: dict[str, int], *, hub: str, layout: str) -> str:
    services = "".join(f"  {name}:\n    port: {ports[name]}\n" for name in SERVICES)
    db_name = "\n  name: universal_mfe_itest" if layout == "shared" else ""
    return f"""\
extends: _base
tier: development
runtime: local
event_hub: {hub}
services:
{services}database:
  layout: {layout}
  port: {ports["postgres"]}{db_name}
redis:
  port: {ports["redis"]}
rabbitmq:
  port: {ports["rabbitmq"]}
  management_port: {ports["rabbitmq_mgmt"]}
secrets:
  jwt_keys: ["${{ITEST_JWT_KEY}}"]
  postgres_password: ${{ITEST_POSTGRES_PASSWORD}}
  rabbitmq_password: ${{ITEST_RABBITMQ_PASSWORD}}
  databases:
    auth: ${{ITEST_AUTH_DB_PASSWORD}}
    payments: ${{ITEST_PAYMENTS_DB_PASSWORD}}
    admin: ${{ITEST_ADMIN_DB_PASSWORD}}
    profile: ${{ITEST_PROFILE_DB_PASSWORD}}
"""


def init_database(cluster: Cluster, env: Environment, secrets: Secrets) -> None:
    """What docker-entrypoint-initdb.d does with the rendered script."""
    bundle = render(env, secrets)
    unit = {
        k: (v.reveal() if isinstance(v, Secret) else str(v))
        for k, v in environments(env, secrets, Endpoints.local(env))["postgres"]
    }
    if unit["POSTGRES_DB"] != "postgres":
        done = cluster.psql("-c", f"CREATE DATABASE {unit['POSTGRES_DB']}")
        assert done.returncode == 0, done.stderr
    done = cluster.psql(
        "-q", "-f", "-", dbname=unit["POSTGRES_DB"], env=unit, stdin=bundle.files["initdb/10-databases.sql"].text
    )
    assert done.returncode == 0, done.stderr
    # As the postgres image sets POSTGRES_PASSWORD: the CLI (migrate, admin grant) connects as the superuser.
    done = cluster.psql(
        "-q", "-v", f"pw={unit['POSTGRES_PASSWORD']}", "-f", "-", stdin="ALTER ROLE postgres PASSWORD :'pw';\n"
    )
    assert done.returncode == 0, done.stderr


@dataclass
class Stack:
    root: Path
    env: Environment
    secrets: Secrets
    cluster: Cluster
    redis: Redis
    rabbit: RabbitMQ | None
    cli_env: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def url(self, service: str = "api-gateway") -> str:
        return f"http://127.0.0.1:{self.env.services[service].port}"  # type: ignore[index]

    def client(self, service: str = "api-gateway") -> httpx.Client:
        return httpx.Client(base_url=self.url(service), timeout=10)

    def cli(self, *args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mfe_deploy", "-C", str(self.root), *args],
            capture_output=True,
            text=True,
            env={**self.cli_env, **(extra or {})},
            timeout=180,
            check=False,
        )

    def start_service(self, name: str) -> None:
        unit = environments(self.env, self.secrets, Endpoints.local(self.env))[name]
        variables = {k: (v.reveal() if isinstance(v, Secret) else str(v)) for k, v in unit}
        with open(self.root / f"{name}.log", "ab") as log:  # the child keeps its own descriptor
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "mfe_services", name],
                env={"PATH": os.environ["PATH"], "HOST": "127.0.0.1", **variables},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def restart_with(self, *, keys: list[str], signing: str | None, environ: dict[str, str]) -> None:
        """Edit the environment's signing keys, load it again through the real loader, and restart every
        service on what it renders, one at a time, as a rolling deploy replaces them."""
        path = self.root / "environments" / "itest.yaml"
        text = re.sub(r"(?m)^  jwt_keys: .*$", f"  jwt_keys: {json.dumps(keys)}", path.read_text())
        text = re.sub(r"(?ms)^jwt:\n.*?(?=^secrets:)", "", text)
        path.write_text(
            text.replace("secrets:\n", f"jwt:\n  signing_key: {signing}\nsecrets:\n" if signing else "secrets:\n")
        )
        self.cli_env.update(environ)
        _, self.secrets = loader.load_with_secrets(self.root, "itest", environ=self.cli_env)
        for name in SERVICES:
            proc = self.processes[name]
            proc.terminate()
            proc.wait(timeout=20)
            self.start_service(name)
            self.wait_ready((name,))

    def wait_ready(self, names: tuple[str, ...] = SERVICES, timeout: float = 30) -> None:
        def ready() -> bool:
            for name in names:
                if self.processes[name].poll() is not None:
                    raise RuntimeError(f"{name} exited:\n{self.log(name)}")
                try:
                    if httpx.get(self.url(name) + "/health", timeout=2).status_code != 200:
                        return False
                except httpx.HTTPError:
                    return False
            return True

        wait_until(ready, timeout, "services")

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")[-4000:]

    def stop_services(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=20)
            if proc.poll() is None:
                proc.kill()


@contextlib.contextmanager
def running_stack(root: Path, *, hub: str = "rabbitmq", layout: str = "per-service") -> Iterator[Stack]:
    shutil.copytree(REPO / "environments", root / "environments")
    ports = {name: free_port() for name in (*SERVICES, "redis", "rabbitmq", "rabbitmq_mgmt")}
    cli_env = {**{k: v for k, v in os.environ.items() if not k.startswith("ITEST_")}, **STACK_SECRETS}
    with temp_cluster() as cluster:
        ports["postgres"] = cluster.port
        (root / "environments" / "itest.yaml").write_text(environment_yaml(ports, hub=hub, layout=layout))
        loaded, secrets = loader.load_with_secrets(root, "itest", environ=cli_env)
        init_database(cluster, loaded.env, secrets)
        rabbit_ctx = (
            rabbitmq_server(STACK_SECRETS["ITEST_RABBITMQ_PASSWORD"], ports["rabbitmq"])
            if hub == "rabbitmq"
            else contextlib.nullcontext()
        )
        with redis_server(ports["redis"]) as redis, rabbit_ctx as rabbit:
            if rabbit is not None:  # each service's own user, as `up` creates them
                rabbit.ctl("import_definitions", stdin=hub_definitions(secrets).reveal())
            stack = Stack(root, loaded.env, secrets, cluster, redis, rabbit, cli_env)
            migrated = stack.cli("migrate", "--env", "itest")
            assert migrated.returncode == 0, migrated.stdout + migrated.stderr
            try:
                for name in SERVICES:
                    stack.start_service(name)
                stack.wait_ready()
                yield stack
            finally:
                stack.stop_services()


def poll(fetch: object, timeout: float = 10.0, interval: float = 0.1) -> object:
    """Call fetch() until it returns something truthy, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()  # type: ignore[operator]
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def maintenance_round_trip(gw: httpx.Client, cli: Callable[..., subprocess.CompletedProcess[str]], env: str) -> None:
    """`maintenance on`: API routes 503 JSON with Retry-After and the message, /health still 200; `off`:
    traffic flows again; both in history."""
    assert gw.get("/api/auth/version").status_code == 200
    turned_on = cli("maintenance", "on", "--env", env, "--message", "back at noon", "--retry-after", "300", "--json")
    assert turned_on.returncode == 0, turned_on.stderr
    said = json.loads(turned_on.stdout)
    assert said["on"] is True and said["notice"]["message"] == "back at noon" and said["notice"]["retry_after"] == 300
    try:
        refused = gw.get("/api/auth/version")
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "300"
        assert refused.json() == {"error": "maintenance", "message": "back at noon"}
        assert gw.post("/api/auth/login", json={"email": "a@b.io", "password": "x"}).status_code == 503
        assert gw.get("/health").status_code == 200
        assert "back at noon" in cli("maintenance", "status", "--env", env).stdout
    finally:
        turned_off = cli("maintenance", "off", "--env", env, "--json")
    assert turned_off.returncode == 0, turned_off.stderr
    assert json.loads(turned_off.stdout) == {"env": env, "on": False, "notice": None}
    assert gw.get("/api/auth/version").status_code == 200
    history = cli("history", "--env", env).stdout
    assert "maintenance on" in history and "maintenance off" in history
