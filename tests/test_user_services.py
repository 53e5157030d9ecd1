"""Services of your own, declared in the environment with no Python change: `notifications` (its own
Dockerfile, command, database and migration, in tests/fixtures/notifications) on the local runtime here;
the docker runtime's run of the same is in test_user_services_docker.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.local_project import LocalProject, make_local_project
from tests.pg import free_port
from tests.test_services_e2e import _user

ENV = "usl"


def notifications_yaml(port: int, *, command: bool = True) -> str:
    """The service as a user declares it (paths relative to the project)."""
    lines = [
        "  notifications:",
        f"    port: {port}",
        "    build: {context: fixtures/notifications}",
        *(["    command: [python3, fixtures/notifications/server.py]"] if command else []),
        "    database: true",
        "    migrations: {path: fixtures/notifications/migrations}",
        "    env: {GREETING: hello from the environment}",
        "    depends_on: [auth]",
    ]
    return "\n".join(lines) + "\n"


def add_service(project_root: Path, env: str, block: str, secret: str) -> None:
    path = project_root / "environments" / f"{env}.yaml"
    text = path.read_text().replace("services:\n", "services:\n" + block, 1)
    path.write_text(text + f"secrets:\n  databases:\n    notifications: {secret}\n")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalProject]:
    root = tmp_path_factory.mktemp("user-services") / "project"
    p = make_local_project(root, ENV)
    (root / "fixtures").mkdir()
    (root / "fixtures" / "notifications").symlink_to(REPO / "tests" / "fixtures" / "notifications")
    p.ports["notifications"] = free_port()
    add_service(root, ENV, notifications_yaml(p.ports["notifications"]), "${USL_NOTIFICATIONS_DB:-notifications-dev}")
    up = p.cli("up", "--env", ENV)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield p
    finally:
        p.cli("down", "--env", ENV, "--volumes", "--yes")


def test_a_sixth_service_runs_from_its_command_behind_the_gateway(project: LocalProject) -> None:
    status = project.status()
    assert status["notifications"]["health"] == "healthy" and status["notifications"]["state"] == "RUNNING"
    with project.gateway() as gw:
        assert gw.get("/api/notifications/inbox").status_code == 401  # the gateway checks the JWT first
        _, headers = _user(gw)
        seen = gw.get("/api/notifications/inbox", headers=headers)
        assert seen.status_code == 200, seen.text
        body = seen.json()
        assert (body["service"], body["path"], body["has_database"]) == (
            "notifications",
            "/api/notifications/inbox",
            True,
        )
        assert body["greeting"] == "hello from the environment"
        assert gw.get("/health").json()["services"]["notifications"] == "healthy"


def test_its_migration_ran_in_its_own_schema(project: LocalProject) -> None:
    tables = project.psql("universal_mfe_dev", "SELECT count(*) FROM notifications.notifications")
    assert tables.strip() == "0"
    status = project.cli("migrate", "status", "--env", ENV, "--service", "notifications", "--json")
    assert status.returncode == 0, status.stderr
    (outcome,) = json.loads(status.stdout)
    assert [(m["id"], m["state"]) for m in outcome["migrations"]] == [("0001_notifications", "applied")]


def test_backups_include_its_database(project: LocalProject) -> None:
    project.psql("universal_mfe_dev", "INSERT INTO notifications.notifications (recipient, body) VALUES ('a', 'kept')")
    made = project.cli("backup", "--env", ENV, "--json")
    assert made.returncode == 0, made.stderr
    backup = json.loads(made.stdout)
    project.psql("universal_mfe_dev", "DELETE FROM notifications.notifications")
    restored = project.cli("restore", "--env", ENV, backup["id"], "--service", "notifications", "--yes")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert project.psql("universal_mfe_dev", "SELECT body FROM notifications.notifications").split() == ["kept"]


def test_plan_on_the_local_runtime(project: LocalProject) -> None:
    def steps() -> tuple[int, list[tuple[str, str, str]]]:
        done = project.cli("plan", "--env", ENV, "--json")
        return done.returncode, [(s["action"], s["target"], s["reason"]) for s in json.loads(done.stdout)["steps"]]

    assert steps() == (0, [])
    path = project.root / "environments" / f"{ENV}.yaml"
    original = path.read_text()
    try:
        path.write_text(original.replace("GREETING: hello from the environment", "GREETING: changed"))
        assert steps() == (1, [("replace", "notifications", "env file changed")])
    finally:
        path.write_text(original)
    assert steps() == (0, [])


@pytest.mark.parametrize("layout", ["per-service", "shared"])
def test_a_service_with_a_database_added_to_a_running_stack_gets_its_role_and_database(
    tmp_path: Path, layout: str
) -> None:
    """The init script makes roles and databases on an empty cluster only: a service with a database added
    to a stack that already ran failed its migrations (`password authentication failed for user
    "notifications_app"`). Every `up` now makes what is missing; a second `up` changes nothing."""
    root = tmp_path / "project"
    p = make_local_project(root, "lat", layout=layout)
    (root / "fixtures").mkdir()
    (root / "fixtures" / "notifications").symlink_to(REPO / "tests" / "fixtures" / "notifications")
    first = p.cli("up", "--env", "lat")
    try:
        assert first.returncode == 0, first.stderr
        p.ports["notifications"] = free_port()
        add_service(root, "lat", notifications_yaml(p.ports["notifications"]), "${LAT_NOTIFICATIONS_DB:-notif-dev}")
        added = p.cli("up", "--env", "lat")
        assert added.returncode == 0, added.stdout + added.stderr
        assert p.status()["notifications"]["health"] == "healthy"
        where = {"shared": ("universal_mfe_dev", "notifications"), "per-service": ("notifications_db", "public")}
        database, schema = where[layout]
        assert p.psql(database, f"SELECT count(*) FROM {schema}.notifications").strip() == "0"  # its migration ran
        again = p.cli("up", "--env", "lat")
        assert again.returncode == 0, again.stdout + again.stderr
    finally:
        p.cli("down", "--env", "lat", "--volumes", "--yes")
