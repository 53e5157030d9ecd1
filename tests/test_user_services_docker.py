"""Services of your own on a real Docker engine, with no Python change: `notifications` built from its own
Dockerfile (tests/fixtures/notifications, not part of mfe_services), owning a database with one migration,
routed by the gateway with JWT checks, in backups and restores, rolled back; `echo` from a prebuilt image
only; and a service removed from the environment is removed by `up`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO
from tests.engines import remove_images, require_engine_with_standins
from tests.pg import free_port
from tests.test_services_e2e import _user
from tests.test_user_services import notifications_yaml

ENV = "usd"
PREFIX = "mfe-test-usd"
PREBUILT = f"{PREFIX}/echo:prebuilt"
FIXTURE = REPO / "tests" / "fixtures" / "notifications"
BUNDLED = ("api-gateway", "auth", "payments", "admin", "profile")

require_engine_with_standins()


@dataclass
class Project:
    root: Path
    ports: dict[str, int]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "mfe_deploy", "-C", str(self.root), *args]
        return subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ), timeout=900, check=False)

    def gateway(self) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.ports['api-gateway']}", timeout=15)

    def psql(self, sql: str) -> str:
        name = self.containers("postgres")[0]
        argv = ["docker", "exec", name, "psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-U", "postgres"]
        done = subprocess.run([*argv, "-d", "universal_mfe_dev", "-c", sql], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def containers(self, service: str) -> list[str]:
        labels = ["--filter", f"label=com.docker.compose.project=universal-mfe-{ENV}"]
        labels += ["--filter", f"label=com.docker.compose.service={service}"]
        done = subprocess.run(["docker", "ps", "-a", *labels, "--format", "{{.Names}}"], capture_output=True, text=True)
        return done.stdout.split()


def write_environment(root: Path, ports: dict[str, int], *, with_echo: bool) -> None:
    services = "".join(f"  {name}:\n    port: {ports[name]}\n" for name in BUNDLED)
    services += notifications_yaml(ports["notifications"], command=False)
    if with_echo:
        services += f"  echo:\n    port: {ports['echo']}\n    image: {PREBUILT}\n    routes: {{prefix: /api/echo}}\n"
    (root / "environments" / f"{ENV}.yaml").write_text(
        f"extends: development\nruntime: docker\nservices:\n{services}"
        f"database:\n  port: {ports['postgres']}\nredis:\n  port: {ports['redis']}\n"
        "images:\n  postgres: mfe-local/postgres:15\n  redis: mfe-local/redis:7\n"
        f"  service_base: mfe-local/python:3.11\n  services_prefix: {PREFIX}\n"
        "secrets:\n  databases:\n    notifications: ${USD_NOTIFICATIONS_DB:-notifications-dev-password}\n"
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    root = tmp_path_factory.mktemp("user-services-docker") / "project"
    shutil.copytree(REPO / "environments", root / "environments")
    (root / "fixtures").mkdir()
    shutil.copytree(FIXTURE, root / "fixtures" / "notifications")  # a copy: the plan test adds a migration
    remove_images(PREFIX)
    argv = ["docker", "build", "-q", "-t", PREBUILT, "--build-arg", "VERSION=prebuilt", str(FIXTURE)]
    built = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "DOCKER_BUILDKIT": "0"})
    assert built.returncode == 0, built.stderr
    ports = {name: free_port() for name in (*BUNDLED, "notifications", "echo", "postgres", "redis")}
    write_environment(root, ports, with_echo=True)
    p = Project(root, ports)
    up = p.cli("up", "--env", ENV, "--version", "v1")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield p
    finally:
        p.cli("down", "--env", ENV, "--volumes", "--yes")
        remove_images(PREFIX)


def _seen(project: Project, path: str) -> dict[str, object]:
    with project.gateway() as gw:
        assert gw.get(path).status_code == 401  # the gateway checks the JWT before it routes
        _, headers = _user(gw)
        answer = gw.get(path, headers=headers)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())


def test_up_builds_migrates_and_routes_a_service_of_yours(project: Project) -> None:
    body = _seen(project, "/api/notifications/inbox")
    assert (body["service"], body["version"], body["has_database"]) == ("notifications", "v1", True)
    assert body["greeting"] == "hello from the environment"
    assert project.psql("SELECT count(*) FROM notifications.notifications").strip() == "0"  # its migration ran
    echo = _seen(project, "/api/echo/x")
    assert (echo["service"], echo["version"], echo["has_database"]) == ("echo", "prebuilt", False)


def _ids() -> list[str]:
    argv = ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project=universal-mfe-{ENV}"]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    return sorted(done.stdout.split())


def _plan(project: Project, version: str) -> tuple[int, list[tuple[str, str, str]]]:
    done = project.cli("plan", "--env", ENV, "--version", version, "--json")
    steps = json.loads(done.stdout)["steps"]
    return done.returncode, [(s["action"], s["target"], s["reason"]) for s in steps]


def test_plan_and_diff_name_exactly_what_changed_and_change_nothing(project: Project) -> None:
    assert _plan(project, "v1") == (0, [])
    in_sync = project.cli("diff", "--env", ENV, "--version", "v1")
    assert in_sync.returncode == 0 and "usd: in sync with v1" in in_sync.stdout, in_sync.stdout + in_sync.stderr
    before = _ids()
    path = project.root / "environments" / f"{ENV}.yaml"
    original = path.read_text()
    migration = project.root / "fixtures" / "notifications" / "migrations" / "0002_read_at.sql"
    try:
        path.write_text(original.replace("GREETING: hello from the environment", "GREETING: changed"))
        migration.write_text("ALTER TABLE notifications ADD COLUMN read_at timestamptz;\n")
        code, steps = _plan(project, "v1")
        wanted = [
            ("migrate", "notifications", "pending: 0002_read_at"),
            ("replace", "notifications", "env file changed"),
        ]
        assert (code, steps) == (1, wanted)
        shown = project.cli("diff", "--env", ENV, "--version", "v1")
        assert shown.returncode == 1
        assert (
            "changed: .mfe/usd/env/notifications.env (holds secrets: values not shown)\n  changed: GREETING\n"
            in shown.stdout
        )
        assert "notifications: pending migrations 0002_read_at" in shown.stdout
        assert "hello from the environment" not in shown.stdout and "changed'" not in shown.stdout
        code, steps = _plan(project, "v2")
        built = ("api-gateway", "auth", "payments", "admin", "profile", "notifications")
        assert [s[1] for s in steps if s[0] == "replace"] == list(built)
        assert ("replace", "auth", f"image {PREFIX}/auth:v1 -> {PREFIX}/auth:v2") in steps
    finally:
        path.write_text(original)
        migration.unlink()
    assert _ids() == before  # nothing was started, stopped or recreated
    assert _plan(project, "v1") == (0, [])


def test_backup_and_restore_include_its_database(project: Project) -> None:
    project.psql("INSERT INTO notifications.notifications (recipient, body) VALUES ('a', 'kept')")
    made = project.cli("backup", "--env", ENV, "--json")
    assert made.returncode == 0, made.stderr
    backup = json.loads(made.stdout)
    assert "notifications" in backup["databases"]
    project.psql("DELETE FROM notifications.notifications")
    restored = project.cli("restore", "--env", ENV, backup["id"], "--service", "notifications", "--yes")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert project.psql("SELECT body FROM notifications.notifications").split() == ["kept"]


def test_a_new_version_and_its_rollback(project: Project) -> None:
    v2 = project.cli("up", "--env", ENV, "--version", "v2")
    assert v2.returncode == 0, v2.stdout + v2.stderr
    assert _seen(project, "/api/notifications/x")["version"] == "v2"
    back = project.cli("rollback", "notifications", "--env", ENV)
    assert back.returncode == 0, back.stdout + back.stderr
    assert _seen(project, "/api/notifications/x")["version"] == "v1"
    prebuilt = project.cli("rollback", "echo", "--env", ENV)
    assert prebuilt.returncode == 1 and f"runs the prebuilt image {PREBUILT}" in prebuilt.stderr


def test_a_service_removed_from_the_environment_is_removed_by_up(project: Project) -> None:
    assert project.containers("echo")
    write_environment(project.root, project.ports, with_echo=False)
    code, steps = _plan(project, "v2")
    assert code == 1 and ("remove", "echo", "no longer in the environment (its data stays)") in steps
    again = project.cli("up", "--env", ENV, "--version", "v2")
    assert again.returncode == 0, again.stdout + again.stderr
    assert project.containers("echo") == []
    with project.gateway() as gw:
        _, headers = _user(gw)
        assert gw.get("/api/echo/x", headers=headers).status_code == 404


def test_a_service_with_a_database_added_to_the_running_stack_gets_its_role_and_database(project: Project) -> None:
    """The image's init script makes roles and databases on an empty cluster only: `reminders` (the same
    fixture under another name, with a database) added to this running stack gets its role and schema from
    `up`, its migration runs, and the gateway routes to it."""
    path = project.root / "environments" / f"{ENV}.yaml"
    block = notifications_yaml(free_port(), command=False).replace("notifications:", "reminders:", 1)
    text = path.read_text().replace("services:\n", "services:\n" + block, 1)
    text = text.replace("  databases:\n", "  databases:\n    reminders: ${USD_REMINDERS_DB:-reminders-dev-password}\n")
    path.write_text(text)
    up = project.cli("up", "--env", ENV, "--version", "v2")
    assert up.returncode == 0, up.stdout + up.stderr
    assert project.psql("SELECT count(*) FROM reminders.notifications").strip() == "0"  # its migration ran
    seen = _seen(project, "/api/reminders/inbox")
    assert (seen["service"], seen["has_database"]) == ("reminders", True)
