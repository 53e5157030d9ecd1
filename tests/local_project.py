"""A throwaway project whose environment runs on the local runtime, driven through the real CLI, with
superuser access to its PostgreSQL for the tests' own checks. Used by the local-runtime and backup tests."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import REPO
from tests.pg import bindir, free_port
from tests.stack import SERVICES

DATABASE_SERVICES = ("auth", "payments", "admin", "profile")


@dataclass
class LocalProject:
    root: Path
    ports: dict[str, int]
    environ: dict[str, str]
    env: str
    layout: str = "shared"

    def cli(
        self, *args: str, extra: dict[str, str] | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mfe_deploy", "-C", str(self.root), *args],
            capture_output=True,
            text=True,
            env={**self.environ, **(extra or {})},
            timeout=timeout,
            check=False,
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "mfe_deploy", "-C", str(self.root), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.environ,
        )

    def psql(self, database: str, sql: str) -> str:
        done = subprocess.run(
            [
                str(bindir() / "psql"),
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.ports["postgres"]),
                "-U",
                "postgres",
                "-d",
                database,
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "PGPASSWORD": "postgres"},
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def places(self) -> dict[str, tuple[str, str]]:
        """Where each service's tables live: (database, schema)."""
        if self.layout == "shared":  # development: one database, a schema per service
            return {s: ("universal_mfe_dev", s) for s in DATABASE_SERVICES}
        return {s: (f"{s}_db", "public") for s in DATABASE_SERVICES}

    def status(self) -> dict[str, dict[str, Any]]:
        done = self.cli("status", "--env", self.env, "--json")
        assert done.returncode == 0, done.stderr
        return {row["name"]: row for row in json.loads(done.stdout)}

    def gateway(self) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.ports['api-gateway']}", timeout=10)

    def listening(self) -> list[int]:
        return [p for p in self.ports.values() if port_open(p)]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


def make_local_project(
    root: Path, env: str, *, layout: str = "shared", extra_yaml: str = "", extra_environ: dict[str, str] | None = None
) -> LocalProject:
    """A copy of the repository's environments plus `env`: development on free loopback ports."""
    shutil.copytree(REPO / "environments", root / "environments")
    ports = {name: free_port() for name in (*SERVICES, "postgres", "redis")}
    services = "".join(f"  {name}:\n    port: {ports[name]}\n" for name in SERVICES)
    database = "  layout: per-service\n  name: null\n" if layout == "per-service" else ""
    (root / "environments" / f"{env}.yaml").write_text(
        f"extends: development\nruntime: local\nservices:\n{services}"
        f"database:\n{database}  port: {ports['postgres']}\nredis:\n  port: {ports['redis']}\n{extra_yaml}"
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("JWT_", "POSTGRES_", "BKL_"))}
    return LocalProject(root, ports, {**environ, **(extra_environ or {})}, env, layout)
