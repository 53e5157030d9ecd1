"""Point-in-time recovery (database.pitr) on the local runtime, with Debian's pgBackRest and the real
PostgreSQL: the WAL archived as it is written, `restore --to-time` between two batches of writes keeping
exactly the first, fenced and reported as a restore from a dump is."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests import backup_suite as suite
from tests.conftest import REPO
from tests.local_project import LocalProject, make_local_project
from tests.pg import free_port
from tests.test_user_services import add_service, notifications_yaml

ENV = "pitr"

pytestmark = pytest.mark.skipif(shutil.which("pgbackrest") is None, reason="pgbackrest: run scripts/setup-system")


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalProject]:
    root = tmp_path_factory.mktemp("pitr") / "project"
    p = make_local_project(root, ENV, layout="per-service")
    with_pitr(root, ENV)
    # A service of the user's, whose migrations folder the tests add to (a release that drops a column).
    shutil.copytree(REPO / "tests" / "fixtures" / "notifications", root / "fixtures" / "notifications")
    p.ports["notifications"] = free_port()
    add_service(root, ENV, notifications_yaml(p.ports["notifications"]), "${PITR_NOTIFICATIONS_DB:-pitr-notifications}")
    with running(p, ENV):
        yield p


def with_pitr(root: Path, env: str) -> None:
    path = root / "environments" / f"{env}.yaml"  # pitr goes into the file's own database: section
    path.write_text(path.read_text().replace("database:\n", "database:\n  pitr:\n    archive_timeout: 2s\n", 1))


@contextmanager
def running(p: LocalProject, env: str) -> Iterator[LocalProject]:
    """`up` (which takes pgBackRest's first full backup), and `down --volumes` after."""
    up = suite.ok(p.cli("up", "--env", env))
    assert "first full backup taken" in up.stderr, up.stderr
    try:
        yield p
    finally:
        p.cli("down", "--env", env, "--volumes", "--yes")


def payments(p: LocalProject) -> list[str]:
    database, schema = p.places()["payments"]
    return p.psql(database, f"SELECT idempotency_key FROM {schema}.payments ORDER BY 1").split()


def pay(p: LocalProject, count: int, tag: str) -> list[str]:
    keys = []
    with p.gateway() as gw:
        from tests.test_services_e2e import _user

        _, auth = _user(gw)
        for n in range(count):
            key = f"{tag}-{n}-{time.time_ns()}"
            done = gw.post(
                "/api/payments", json={"amount": 10 + n, "currency": "EUR"}, headers={**auth, "Idempotency-Key": key}
            )
            assert done.status_code == 201, done.text
            keys.append(key)
    return keys


def test_restore_to_a_time_between_two_batches_keeps_exactly_the_first(local: LocalProject) -> None:
    first = pay(local, 5, "first")
    time.sleep(1.5)
    moment = datetime.now(UTC)
    time.sleep(1.5)
    second = pay(local, 5, "second")
    held = payments(local)
    assert set(first) <= set(held) and set(second) <= set(held)
    done = suite.ok(local.cli("restore", "--env", ENV, "--to-time", moment.isoformat(), "--yes"))
    assert f"restored to {moment.isoformat()}" in done.stdout, done.stdout
    assert "public.payments: 5 rows" in done.stdout  # what was written after the moment, reported
    after = payments(local)
    assert set(first) <= set(after)
    assert not set(second) & set(after)
    suite.ok(local.cli("health", "--env", ENV))
    # the pre-restore backup holds the second batch: nothing acknowledged was lost for good
    pre = json.loads(suite.ok(local.cli("backup", "list", "--env", ENV, "--json")).stdout)[-1]
    assert pre["kind"] == "pre-restore"
    # writes go on after the restore, on the new timeline, and are archived too
    pay(local, 2, "third")


def test_restore_before_a_release_brings_back_the_column_its_migration_dropped(local: LocalProject) -> None:
    """Release N's migration drops a column; `restore --before-release N` brings the databases to the
    moment just before that migration ran (the ledger's `migrated_at`): the column and its data are back."""
    columns = "SELECT string_agg(column_name, ',' ORDER BY column_name) FROM information_schema.columns "
    columns += "WHERE table_name = 'notifications'"
    schema = local.psql(
        "notifications_db", "SELECT table_schema FROM information_schema.tables WHERE table_name = 'notifications'"
    ).strip()
    table = f"{schema}.notifications"
    local.psql("notifications_db", f"INSERT INTO {table} (recipient, body) VALUES ('ada', 'kept body')")
    migration = local.root / "fixtures" / "notifications" / "migrations" / "0002_drop_body.sql"
    migration.write_text("ALTER TABLE notifications DROP COLUMN body;\n")
    suite.ok(local.cli("up", "--env", ENV))
    release = json.loads(suite.ok(local.cli("releases", "--env", ENV, "--json")).stdout)[-1]
    assert release["outcome"] == "succeeded" and release["migrations"]["notifications"] == "0002_drop_body"
    assert release["migrated_at"], release  # the moment just before its migration ran
    assert local.psql("notifications_db", columns).strip() == "created_at,id,recipient"
    migration.unlink()  # the operator takes the release's migration back before going back
    done = suite.ok(local.cli("restore", "--env", ENV, "--before-release", str(release["id"]), "--yes"))
    assert f"restored to {release['migrated_at']}" in done.stdout, done.stdout
    assert f"release {release['id']}'s migrations are no longer applied" in done.stdout
    assert local.psql("notifications_db", columns).strip() == "body,created_at,id,recipient"
    assert local.psql("notifications_db", f"SELECT recipient, body FROM {table}").strip() == "ada|kept body"
    suite.ok(local.cli("health", "--env", ENV))
    # an up that applied nothing has no moment before its migrations; a release the ledger lacks is named
    suite.ok(local.cli("up", "--env", ENV))
    quiet = json.loads(suite.ok(local.cli("releases", "--env", ENV, "--json")).stdout)[-1]
    # ... and its schema's head is the one the restore went back to
    assert quiet["migrated_at"] == "" and quiet["migrations"]["notifications"] == "0001_notifications"
    refused = local.cli("restore", "--env", ENV, "--before-release", str(quiet["id"]), "--yes")
    assert refused.returncode == 1 and "applied no migration" in refused.stderr, refused.stderr
    missing = local.cli("restore", "--env", ENV, "--before-release", "999", "--yes")
    assert missing.returncode == 1 and "has no release 999" in missing.stderr, missing.stderr
    both = local.cli("restore", "--env", ENV, "--before-release", "1", "--to-time", "2026-01-01T00:00:00Z", "--yes")
    assert both.returncode == 2 and "not both" in both.stderr


def test_backup_takes_a_full_backup_and_list_shows_the_window(local: LocalProject) -> None:
    suite.ok(local.cli("backup", "--env", ENV))
    listed = suite.ok(local.cli("backup", "list", "--env", ENV))
    line = next(x for x in listed.stdout.splitlines() if x.startswith("point in time:"))
    assert "any moment from" in line and "full backup(s)" in line
    count = int(line.rsplit("; ", 1)[1].split()[0])
    assert count >= 2  # the one `up` took, and this one


def test_a_time_outside_the_window_is_refused_and_changes_nothing(local: LocalProject) -> None:
    before = payments(local)
    early = local.cli("restore", "--env", ENV, "--to-time", "2001-01-01T00:00:00Z", "--yes")
    assert early.returncode == 1 and "before the oldest recoverable moment" in early.stderr, early.stderr
    later = local.cli("restore", "--env", ENV, "--to-time", "2999-01-01T00:00:00Z", "--yes")
    assert later.returncode == 1 and "is not in the past" in later.stderr
    bad = local.cli("restore", "--env", ENV, "--to-time", "yesterday", "--yes")
    assert bad.returncode == 2 and "not an ISO 8601 time" in bad.stderr
    assert payments(local) == before


def test_without_pitr_to_time_is_a_clear_error(tmp_path: pytest.TempPathFactory) -> None:
    p = make_local_project(tmp_path / "project", "nopitr")  # type: ignore[operator]
    done = p.cli("restore", "--env", "nopitr", "--to-time", "2026-01-01T00:00:00Z", "--yes")
    assert done.returncode == 1 and "database.pitr is not set" in done.stderr, done.stderr
