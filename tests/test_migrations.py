"""`mfe-deploy migrate` on a real PostgreSQL, through the CLI and the runner the services ship."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from mfe_deploy.config import loader
from tests.conftest import REPO
from tests.pg import Cluster, free_port, temp_cluster
from tests.stack import SERVICES, STACK_SECRETS, environment_yaml, init_database, poll


@dataclass
class Project:
    root: Path
    cluster: Cluster
    migrations: Path
    environ: dict[str, str]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mfe_deploy", "-C", str(self.root), *args],
            capture_output=True,
            text=True,
            env=self.environ,
            timeout=180,
            check=False,
        )

    def sql(self, query: str, db: str = "auth_db") -> str:
        done = self.cluster.psql("-At", "-c", query, dbname=db)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def write(self, service: str, name: str, text: str) -> Path:
        path = self.migrations / service / name
        path.write_text(text)
        return path


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    root = tmp_path / "project"
    shutil.copytree(REPO / "environments", root / "environments")
    migrations = tmp_path / "migrations"
    for service in ("auth", "payments", "admin", "profile"):
        shutil.copytree(REPO / "services" / service / "migrations", migrations / service)
    with temp_cluster() as cluster:
        ports = {name: free_port() for name in (*SERVICES, "redis", "rabbitmq", "rabbitmq_mgmt")}
        ports["postgres"] = cluster.port
        (root / "environments" / "itest.yaml").write_text(environment_yaml(ports, hub="rabbitmq", layout="per-service"))
        environ = {**os.environ, **STACK_SECRETS, "MFE_MIGRATIONS_DIR": str(migrations)}
        loaded, secrets = loader.load_with_secrets(root, "itest", environ=environ)
        init_database(cluster, loaded.env, secrets)
        yield Project(root, cluster, migrations, environ)


def test_apply_then_nothing_to_do(project: Project) -> None:
    first = project.cli("migrate", "--env", "itest")
    assert first.returncode == 0, first.stderr
    lines = sorted(first.stdout.splitlines())
    assert [line.split(":")[0] for line in lines] == ["admin", "auth", "payments", "profile"]
    assert "auth: applied 0001_users (" in first.stdout and "0002_event_outbox (" in first.stdout
    second = project.cli("migrate", "--env", "itest")
    assert (second.returncode, sorted(second.stdout.splitlines())) == (
        0,
        ["admin: up to date", "auth: up to date", "payments: up to date", "profile: up to date"],
    )
    status = json.loads(project.cli("migrate", "status", "--env", "itest", "--service", "auth", "--json").stdout)
    assert [(m["id"], m["state"]) for m in status[0]["migrations"]] == [
        ("0001_users", "applied"),
        ("0002_event_outbox", "applied"),
    ]
    assert project.sql("SELECT count(*) FROM mfe_schema_migrations WHERE status = 'applied'") == "2"
    # nothing left to apply, and still the schema's head: a release recorded on an adopted database (or a
    # killed run's volume) knows what its code runs against
    again = json.loads(project.cli("migrate", "--env", "itest", "--service", "auth", "--json").stdout)
    assert [(o["service"], o["applied"], o["head"]) for o in again] == [("auth", [], "0002_event_outbox")]


def _slow_counter(project: Project) -> None:
    """auth's only migration: a table made slowly (0.3 s), so that concurrent runners overlap."""
    for path in (project.migrations / "auth").iterdir():
        path.unlink()
    project.write(
        "auth",
        "0001_counter.sql",
        "CREATE TABLE counter (n int);\nSELECT pg_sleep(0.3);\nINSERT INTO counter VALUES (1);\n",
    )


def test_ten_concurrent_runs_apply_each_migration_once(project: Project) -> None:
    _slow_counter(project)
    project.write("auth", "0002_more.sql", "SELECT pg_sleep(0.3);\nINSERT INTO counter VALUES (2);\n")
    args = ("migrate", "--env", "itest", "--service", "auth", "--lock-wait", "120")
    with ThreadPoolExecutor(10) as pool:
        runs = list(pool.map(lambda _: project.cli(*args), range(10)))
    assert [r.returncode for r in runs] == [0] * 10, [r.stderr for r in runs if r.returncode]
    assert sum("applied 0001_counter" in r.stdout for r in runs) == 1
    assert project.sql("SELECT string_agg(n::text, ',' ORDER BY n) FROM counter") == "1,2"
    assert project.sql("SELECT count(*) FROM mfe_schema_migrations") == "2"


def test_the_advisory_lock_alone_keeps_concurrent_runners_apart(project: Project) -> None:
    """Two hosts do not share a lock file: the database's advisory lock must suffice on its own."""
    _slow_counter(project)
    url = f"postgresql://auth_app:{STACK_SECRETS['ITEST_AUTH_DB_PASSWORD']}@127.0.0.1:{project.cluster.port}/auth_db"
    env = {**project.environ, "DATABASE_URL": url}
    runner = [sys.executable, "-m", "mfe_services.migrate", "--service", "auth", "apply"]
    with ThreadPoolExecutor(10) as pool:
        runs = list(pool.map(lambda _: subprocess.run(runner, capture_output=True, text=True, env=env), range(10)))
    assert [r.returncode for r in runs] == [0] * 10, [r.stdout for r in runs if r.returncode]
    assert sum('"id": "0001_counter"' in r.stdout for r in runs) == 1
    assert project.sql("SELECT count(*) FROM counter") == "1"


def test_an_edited_applied_migration_is_refused(project: Project) -> None:
    assert project.cli("migrate", "--env", "itest", "--service", "auth").returncode == 0
    edited = project.migrations / "auth" / "0001_users.sql"
    edited.write_text(edited.read_text() + "\n-- a harmless-looking comment\n")
    refused = project.cli("migrate", "--env", "itest", "--service", "auth")
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"error: auth: {edited}: applied migration 0001_users was edited after it ran")
    listed = project.cli("migrate", "status", "--env", "itest", "--service", "auth")
    assert listed.returncode == 1 and "auth 0001_users is changed" in listed.stderr


def test_a_failing_migration_changes_nothing_and_blocks_until_resolved(project: Project) -> None:
    assert project.cli("migrate", "--env", "itest", "--service", "auth").returncode == 0
    bad = project.write(
        "auth", "0003_half.sql", "CREATE TABLE half_done (id int);\nINSERT INTO no_such_table VALUES (1);\n"
    )
    failed = project.cli("migrate", "--env", "itest", "--service", "auth")
    assert failed.returncode == 1
    assert 'relation "no_such_table" does not exist (rolled back; nothing of it was applied)' in failed.stderr
    assert project.sql("SELECT to_regclass('half_done') IS NULL") == "t"  # the CREATE TABLE was rolled back too
    listed = project.cli("migrate", "status", "--env", "itest", "--service", "auth", "--json")
    assert listed.returncode == 1  # a failed migration is a non-zero status, for CI gates and monitoring
    assert "auth 0003_half is failed" in listed.stderr
    status = json.loads(listed.stdout)
    assert status[0]["migrations"][-1] == {
        "id": "0003_half",
        "state": "failed",
        "applied_at": status[0]["migrations"][-1]["applied_at"],
        "compatible": False,  # no `-- mfe: compatible` line
        "down": False,  # no 0003_half.down.sql
    }

    bad.write_text("CREATE TABLE half_done (id int);\n")  # fixed, but still blocked until resolved
    blocked = project.cli("migrate", "--env", "itest", "--service", "auth")
    assert blocked.returncode == 1
    assert "migration 0003_half of auth failed" in blocked.stderr
    assert "mfe-deploy migrate resolve --env itest --service auth --rolled-back 0003_half" in blocked.stderr

    resolved = project.cli("migrate", "resolve", "--env", "itest", "--service", "auth", "--rolled-back", "0003_half")
    assert (resolved.returncode, resolved.stdout) == (0, "auth: 0003_half marked rolled back\n")
    applied = project.cli("migrate", "--env", "itest", "--service", "auth")
    assert applied.returncode == 0 and "applied 0003_half" in applied.stdout
    assert project.sql("SELECT to_regclass('half_done') IS NOT NULL") == "t"


def test_down_undoes_newest_first_and_apply_runs_them_again(project: Project) -> None:
    """A rename that older code cannot read, undone by its down file; a compatible one without a down file
    stays; one that is neither refuses the whole run before anything changes."""
    assert project.cli("migrate", "--env", "itest", "--service", "auth").returncode == 0
    project.write("auth", "0003_rename.sql", "ALTER TABLE users RENAME COLUMN email TO email_address;\n")
    project.write("auth", "0003_rename.down.sql", "ALTER TABLE users RENAME COLUMN email_address TO email;\n")
    project.write("auth", "0004_nick.sql", "-- mfe: compatible\nALTER TABLE users ADD COLUMN nick text;\n")
    project.write("auth", "0005_bump.sql", "CREATE TABLE bump (id int);\n")
    project.write("auth", "0005_bump.down.sql", "DROP TABLE bump;\n")
    assert project.cli("migrate", "--env", "itest", "--service", "auth").returncode == 0
    columns = "SELECT string_agg(column_name, ',' ORDER BY column_name) FROM information_schema.columns "
    columns += "WHERE table_name = 'users' AND column_name IN ('email', 'email_address', 'nick')"
    assert project.sql(columns) == "email_address,nick"

    # It can lose data: a run with no terminal to ask on is refused until --yes says so, changing nothing.
    asked = project.cli("migrate", "down", "--env", "itest", "--service", "auth", "--to", "0002_event_outbox")
    assert asked.returncode == 1 and "confirm with --yes when not running interactively" in asked.stderr
    assert project.sql(columns) == "email_address,nick"
    undone = project.cli("migrate", "down", "--env", "itest", "--service", "auth", "--to", "0002_event_outbox", "--yes")
    assert undone.returncode == 0, undone.stderr
    lines = undone.stdout.splitlines()
    assert lines[0].startswith("auth: undid 0005_bump (") and ", 0003_rename (" in lines[0], lines
    assert lines[1] == "auth: kept 0004_nick (compatible with older code)"
    assert project.sql(columns) == "email,nick" and project.sql("SELECT to_regclass('bump') IS NULL") == "t"
    states = "SELECT string_agg(id || '=' || status, ' ' ORDER BY id) FROM mfe_schema_migrations WHERE id > '0003'"
    assert project.sql(states) == "0003_rename=rolled_back 0004_nick=applied 0005_bump=rolled_back"

    again = project.cli("migrate", "--env", "itest", "--service", "auth")
    assert again.returncode == 0 and "applied 0003_rename" in again.stdout and "0005_bump" in again.stdout
    assert project.sql(columns) == "email_address,nick"
    as_json = project.cli("migrate", "down", "--env", "itest", "--service", "auth", "--to", "0004_nick", "-y", "--json")
    assert as_json.returncode == 0, as_json.stderr
    said = json.loads(as_json.stdout)  # stdout is the JSON alone
    assert [u["id"] for u in said["undone"]] == ["0005_bump"] and said["kept"] == [], said
    assert project.cli("migrate", "--env", "itest", "--service", "auth").returncode == 0  # 0005 back for what follows

    project.write("auth", "0006_drop.sql", "ALTER TABLE users DROP COLUMN nick;\n")
    assert project.cli("migrate", "--env", "itest", "--service", "auth").returncode == 0
    refused = project.cli("migrate", "down", "--env", "itest", "--service", "auth", "--to", "0002_event_outbox", "-y")
    assert refused.returncode == 1
    assert "0006_drop of auth cannot be undone: no 0006_drop.down.sql" in refused.stderr, refused.stderr
    assert project.sql(columns) == "email_address"  # nothing ran: 0005 is still applied too
    assert project.sql("SELECT to_regclass('bump') IS NOT NULL") == "t"


def test_a_down_file_without_its_migration_is_refused(project: Project) -> None:
    stray = project.write("auth", "0009_ghost.down.sql", "SELECT 1;\n")
    refused = project.cli("migrate", "--env", "itest", "--service", "auth")
    assert refused.returncode == 1 and f"{stray}: no 0009_ghost.sql for it to undo" in refused.stderr


def test_resolve_applied_marks_a_hand_applied_migration(project: Project) -> None:
    assert project.cli("migrate", "--env", "itest", "--service", "auth").returncode == 0
    project.write("auth", "0003_x.sql", "SELECT 1/0;\n")
    assert project.cli("migrate", "--env", "itest", "--service", "auth").returncode == 1
    resolved = project.cli("migrate", "resolve", "--env", "itest", "--service", "auth", "--applied", "0003_x")
    assert resolved.returncode == 0
    assert project.cli("migrate", "--env", "itest", "--service", "auth").stdout == "auth: up to date\n"


def test_dry_run_prints_the_sql_and_applies_nothing(project: Project) -> None:
    dry = project.cli("migrate", "--env", "itest", "--service", "profile", "--dry-run")
    assert dry.returncode == 0
    assert dry.stdout.startswith("-- profile (profile_db): 0001_profiles\n-- One profile per user")
    assert "CREATE TABLE profiles" in dry.stdout
    assert project.sql("SELECT to_regclass('profiles') IS NULL", db="profile_db") == "t"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ["migrate", "--env", "itest", "--service", "api-gateway"],
            2,
            "error: --service: 'api-gateway' has no database",
        ),
        (
            ["migrate", "resolve", "--env", "itest", "--service", "auth"],
            2,
            "give exactly one of --rolled-back ID or --applied ID",
        ),
        (
            ["migrate", "resolve", "--env", "itest", "--service", "auth", "--applied", "0009_nope"],
            1,
            "error: auth: migration 0009_nope of auth is not recorded as failed",
        ),
        (["migrate"], 2, "--env is required"),
    ],
)
def test_migrate_usage_errors(project: Project, args: list[str], code: int, message: str) -> None:
    result = project.cli(*args)
    assert result.returncode == code
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_database_is_a_clear_error(project: Project) -> None:
    project.cluster.stop()
    try:
        result = project.cli("migrate", "--env", "itest", "--service", "auth")
    finally:
        project.cluster.start()
    assert result.returncode == 1
    assert result.stderr == (
        f'error: auth: connection failed: connection to server at "127.0.0.1", port {project.cluster.port} '
        "failed: Connection refused\n"
    )
    assert STACK_SECRETS["ITEST_AUTH_DB_PASSWORD"] not in result.stderr + result.stdout


def test_a_killed_migrate_releases_its_locks_within_seconds(project: Project) -> None:
    """kill -9 of the CLI and its runner during a 60 s statement: the server notices the dead client within
    its check interval, so the next migrate takes the advisory lock in a few seconds, not a minute."""
    for path in (project.migrations / "auth").iterdir():
        path.unlink()
    slow = project.write("auth", "0001_slow.sql", "CREATE TABLE slow (n int);\nSELECT pg_sleep(60);\n")
    running = subprocess.Popen(
        [sys.executable, "-m", "mfe_deploy", "-C", str(project.root), "migrate", "--env", "itest", "--service", "auth"],
        env=project.environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    active = (
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'mfe-migrate:auth' AND query LIKE '%pg_sleep%'"
    )
    try:
        assert poll(lambda: project.sql(active, db="postgres") == "1", timeout=30), "the migration never started"
    finally:
        os.killpg(running.pid, signal.SIGKILL)
        running.wait(timeout=10)
    killed = time.monotonic()
    gone = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'mfe-migrate:auth'"
    assert poll(lambda: project.sql(gone, db="postgres") == "0", timeout=5), "the dead runner's session lived on"
    slow.write_text("CREATE TABLE slow (n int);\n")
    again = project.cli("migrate", "--env", "itest", "--service", "auth", "--force-unlock")
    assert again.returncode == 0, again.stderr
    assert "applied 0001_slow" in again.stdout
    assert time.monotonic() - killed < 15
