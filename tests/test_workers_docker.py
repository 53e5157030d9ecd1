"""A worker on the docker runtime, rolled under load: the bundled `activity` worker consumes every event from
RabbitMQ while registrations publish a steady stream of them; `rollback activity --to v1` replaces it
start-first (the other services untouched) and `--to v2` brings v2 back. Counted by event id in its database: none lost, none handled twice, and
each old worker drained on SIGTERM (its own log says so before it goes)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO
from tests.engines import ContainerLogs, remove_images, require_engine_with_standins
from tests.pg import free_port
from tests.stack import SERVICES, poll

require_engine_with_standins()

ENV = "wkd"
PREFIX = "mfe-wkt"


@dataclass
class Project:
    root: Path
    gateway_port: int
    environ: dict[str, str]

    def cli(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "mfe_deploy", "-C", str(self.root), *args]
        return subprocess.run(argv, capture_output=True, text=True, env=self.environ, timeout=timeout, check=False)

    def containers(self, service: str) -> list[str]:
        """The running containers' ids (compose may give a new container an old one's name)."""
        label = f"label=com.docker.compose.project=universal-mfe-{ENV}"
        done = subprocess.run(
            [
                "docker",
                "ps",
                "--filter",
                label,
                "--filter",
                f"label=com.docker.compose.service={service}",
                "--format",
                "{{.ID}}",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.split()

    def sql(self, query: str, database: str = "universal_mfe_dev") -> str:
        (postgres,) = self.containers("postgres")
        argv = ["docker", "exec", postgres, "psql", "-X", "-A", "-t", "-U", "postgres", "-d", database, "-c", query]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    root = tmp_path_factory.mktemp("workers-docker") / "project"
    shutil.copytree(REPO / "environments", root / "environments")
    remove_images(PREFIX)
    ports = {name: free_port() for name in SERVICES}
    services = "".join(f"  {name}:\n    port: {ports[name]}\n" for name in SERVICES)
    (root / "environments" / f"{ENV}.yaml").write_text(f"""\
extends: development
runtime: docker
event_hub: rabbitmq
services:
{services}  activity:
    heartbeat: 10s
    stop_timeout: 10s
database:
  port: {free_port()}
redis:
  port: {free_port()}
rabbitmq:
  port: {free_port()}
  management_port: {free_port()}
images:
  postgres: mfe-local/postgres:15
  redis: mfe-local/redis:7
  rabbitmq: mfe-local/rabbitmq:3
  nginx: mfe-local/nginx:1.22
  service_base: mfe-local/python:3.11
  services_prefix: {PREFIX}
secrets:
  rabbitmq_password: ${{WKD_RABBITMQ_PASSWORD:-dev-rabbitmq-password}}
  databases:
    activity: ${{WKD_ACTIVITY_DB_PASSWORD:-dev-activity-password}}
""")
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("JWT_", "POSTGRES_"))}
    p = Project(root, ports["api-gateway"], environ)
    for version in ("v1", "v2"):  # both releases exist; the test rolls the worker alone between them
        up = p.cli("up", "--env", ENV, "--version", version)
        assert up.returncode == 0, up.stdout + up.stderr
    try:
        yield p
    finally:
        p.cli("down", "--env", ENV, "--volumes", "--yes")
        remove_images(PREFIX)


class Publisher:
    """Registrations at a steady rate through the gateway, each one a user.registered event, until stopped."""

    def __init__(self, port: int, rate: float) -> None:
        self.port, self.pause = port, 1 / rate
        self.sent = self.failed = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10) as gw:
            n = 0
            while not self.stop.is_set():
                n += 1
                body = {"email": f"load-{n}-{time.monotonic_ns()}@example.com", "password": "correct horse"}
                try:
                    ok = gw.post("/api/auth/register", json=body).status_code == 201
                except httpx.HTTPError:
                    ok = False
                self.sent += ok
                self.failed += not ok
                self.stop.wait(self.pause)

    def __enter__(self) -> Publisher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def test_a_worker_rolled_forward_and_back_under_load_loses_and_repeats_nothing(
    project: Project, tmp_path: Path
) -> None:
    first = project.containers("activity")
    assert len(first) == 1
    with ContainerLogs(f"universal-mfe-{ENV}", tmp_path / "logs"), Publisher(project.gateway_port, 10) as load:
        time.sleep(2)  # events flow to the first worker before it is replaced
        back = project.cli("rollback", "activity", "--env", ENV, "--to", "v1")
        assert back.returncode == 0, back.stdout + back.stderr
        second = project.containers("activity")
        assert len(second) == 1 and second != first
        time.sleep(2)  # and to the second
        forward = project.cli("rollback", "activity", "--env", ENV, "--to", "v2")
        assert forward.returncode == 0, forward.stdout + forward.stderr
        third = project.containers("activity")
        assert len(third) == 1 and third != second
        time.sleep(2)  # and to the third
    print(f"registrations: {load.sent} acknowledged, {load.failed} failed")
    assert load.sent > 50 and load.failed == 0
    outboxes = "(SELECT published_at FROM auth.event_outbox UNION ALL SELECT published_at FROM payments.event_outbox)"
    unpublished = f"SELECT count(*) FROM {outboxes} o WHERE published_at IS NULL"
    assert poll(lambda: project.sql(unpublished) == "0", timeout=60)
    expected = int(project.sql(f"SELECT count(*) FROM {outboxes} o"))
    assert poll(lambda: int(project.sql("SELECT count(*) FROM activity.handled")) >= expected, timeout=90)
    handled = int(project.sql("SELECT count(*) FROM activity.handled"))
    counted = int(project.sql("SELECT sum(n) FROM activity.counts"))
    workers = project.sql("SELECT count(DISTINCT handled_by) FROM activity.handled")
    print(f"events: {expected} published, {handled} handled, {counted} counted, by {workers} workers")
    assert handled == expected == counted  # none lost, none handled twice
    assert int(workers) >= 3  # v2, v1 and v2 again each did part of the work
    # each old worker drained on SIGTERM: two stops, each said before its container went
    said = "".join(p.read_text() for p in (tmp_path / "logs").glob("*activity*.log"))
    assert said.count("stopping: no new messages") >= 2 and said.count('"message": "stopped"') >= 2, said[-3000:]
