"""Backups on the local runtime (real PostgreSQL under supervisord), per-service layout: the acceptance
suite of tests/backup_suite.py, plus encryption and scheduling."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mfe_deploy.backups import crypt
from tests import backup_suite as suite
from tests.conftest import REPO, Project
from tests.local_project import LocalProject, make_local_project
from tests.pg import free_port

ENV = "bkl"
PASSPHRASE = "bkl-passphrase-0123456789abcdef"


Local = LocalProject


def make_local(root: Path, env: str, extra_yaml: str = "") -> Local:
    return make_local_project(root, env, layout="per-service", extra_yaml=extra_yaml)


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Local]:
    p = make_local(tmp_path_factory.mktemp("backup") / "project", ENV)
    suite.ok(p.cli("up", "--env", ENV))
    try:
        yield p
    finally:
        p.cli("down", "--env", ENV, "--volumes", "--yes")


def test_round_trip_through_the_api(local: Local) -> None:
    suite.round_trip(local)


def test_corrupted_dumps_are_refused_before_anything_changes(local: Local) -> None:
    suite.corruption_is_refused(local)


def test_killed_backups_leave_no_partial_file_and_are_never_listed(local: Local) -> None:
    suite.interruption(local)


def test_a_failing_restore_leaves_the_databases_unchanged(local: Local) -> None:
    suite.failing_restore_changes_nothing(local)


def test_a_restore_failing_under_load_loses_no_acknowledged_write(local: Local) -> None:
    suite.failing_restore_under_load_keeps_every_acknowledged_write(local)


def test_verify_drops_what_a_killed_verify_left(local: Local) -> None:
    left = "mfe_verify_auth_9f8e7d6c"  # as a verify killed before this version named its scratch databases
    running = f"mfe_verify_{int(time.time())}_auth_aa11bb"  # as a verify running now names its own
    for name in (left, running):
        local.psql("postgres", f"CREATE DATABASE {name}")
    try:
        backup_id = suite.new_backup(local)
        checked = suite.ok(local.cli("backup", "verify", "--env", ENV, backup_id))
        assert f"dropped 1 scratch database(s) an interrupted verify left: {left}" in checked.stderr
        present = local.psql("postgres", "SELECT datname FROM pg_database WHERE starts_with(datname, 'mfe_verify_')")
        assert present.split() == [running]  # its own scratch databases are gone too
    finally:
        local.psql("postgres", f"DROP DATABASE IF EXISTS {running}")


def test_a_damaged_manifest_is_listed_and_never_pruned(local: Local) -> None:
    suite.damaged_manifest_is_listed_and_kept(local)


def test_retention_keeps_exactly_the_newest_verified(local: Local) -> None:
    suite.retention(local)


def test_backup_manifest_records_what_was_dumped(local: Local) -> None:
    backup_id = suite.new_backup(local)
    path = suite.folder(local) / backup_id
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["id"] == backup_id and manifest["env"] == ENV and manifest["layout"] == "per-service"
    assert set(manifest["files"]) == {"auth.dump", "payments.dump", "admin.dump", "profile.dump", "globals.sql"}
    assert manifest["postgresql"]["server"].startswith("15") and "pg_dump" in manifest["postgresql"]["pg_dump"]
    users = int(local.psql("auth_db", "SELECT count(*) FROM users"))
    assert manifest["databases"]["auth"]["tables"]["public.users"] == users
    assert manifest["tool"]["name"] == "mfe-deploy"
    for entry in path.iterdir():
        assert entry.stat().st_mode & 0o077 == 0, entry
    assert path.stat().st_mode & 0o077 == 0
    globals_sql = (path / "globals.sql").read_text()
    assert "CREATE ROLE auth_app" in globals_sql and "PASSWORD" not in globals_sql.upper().replace("NOPASSWORD", "")


def test_one_service_backup_and_restore(local: Local) -> None:
    suite.make_data(local, users=1)
    backup_id = suite.new_backup(local, "--service", "payments")
    assert set(json.loads((suite.folder(local) / backup_id / "manifest.json").read_text())["databases"]) == {"payments"}
    before = local.psql("payments_db", "SELECT count(*) FROM payments").strip()
    users_before = local.psql("auth_db", "SELECT count(*) FROM users").strip()
    local.psql("payments_db", "DELETE FROM payments")
    suite.make_data(local, users=1)  # auth changes meanwhile and must keep its change
    # With --maintenance clients get a clean 503 while payments is stopped, never a 502.
    restoring = local.popen("restore", "--env", ENV, backup_id, "--yes", "--maintenance")
    seen: set[int] = set()
    with local.gateway() as gw:
        while restoring.poll() is None:
            seen.add(gw.get("/api/payments/version").status_code)
            time.sleep(0.05)
    out, err = restoring.communicate()
    assert restoring.returncode == 0, err
    assert "restored payments from" in out
    assert 503 in seen and 502 not in seen, seen
    history = [(h["action"], h["result"]) for h in json.loads(local.cli("history", "--env", ENV, "--json").stdout)]
    assert history[-3:] == [("maintenance on", "ok"), ("maintenance off", "ok"), ("restore", "ok")]
    with local.gateway() as gw:
        assert gw.get("/api/payments/version").status_code == 200
    assert local.psql("payments_db", "SELECT count(*) FROM payments").strip() == before
    assert int(local.psql("auth_db", "SELECT count(*) FROM users")) == int(users_before) + 1


def test_restore_asks_and_production_needs_force(local: Local) -> None:
    backup_id = suite.new_backup(local)
    asked = local.cli("restore", "--env", ENV, backup_id)
    assert asked.returncode == 1 and "confirm with --yes" in asked.stderr
    unknown = local.cli("restore", "--env", ENV, "nope", "--yes")
    assert unknown.returncode == 1 and "no complete backup 'nope'" in unknown.stderr


def test_restore_waits_for_the_deploy_lock(local: Local) -> None:
    backup_id = suite.new_backup(local)
    lock = local.root / ".mfe" / ENV / "state" / "deploy.lock"
    holder = {
        "user": "ops",
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "command": "mfe-deploy up --env bkl",
        "since": "2026-11-24T00:00:00+00:00",
    }
    lock.write_text(json.dumps(holder))
    try:
        refused = local.cli("restore", "--env", ENV, backup_id, "--yes")
    finally:
        lock.unlink()
    assert refused.returncode == 3 and f"locked by ops@{socket.gethostname()} pid {os.getpid()}" in refused.stderr
    assert len(suite.backups(local)) == len(list(suite.folder(local).glob("2*")))  # no pre-restore backup taken


def test_production_restore_needs_force(project: Project) -> None:
    refused = project.cli("restore", "--env", "production", "20261124T000000Z-0000", "--yes")
    assert refused.code == 1 and "refusing to restore production without --force" in refused.err


def test_encrypted_backups_hold_no_plaintext_and_restore(tmp_path: Path) -> None:
    enc = make_local(tmp_path / "project", "bklenc", "secrets:\n  backup_passphrase: ${BKL_PASSPHRASE}\n")
    key = {"BKL_PASSPHRASE": PASSPHRASE}
    missing = enc.cli("backup", "--env", enc.env)
    assert missing.returncode == 2 and "BKL_PASSPHRASE is not set" in missing.stderr
    assert not (enc.root / "backups").exists()  # nothing written, not even a folder
    enc.environ.update(key)
    suite.ok(enc.cli("up", "--env", enc.env))
    try:
        suite.make_data(enc, users=1)
        email = enc.psql("auth_db", "SELECT email FROM users ORDER BY created_at DESC LIMIT 1").strip()
        made = suite.ok(enc.cli("backup", "--env", enc.env, "--verify", "--json"))
        backup_id = json.loads(made.stdout)["id"]
        assert PASSPHRASE not in made.stdout + made.stderr
        path = suite.folder(enc) / backup_id
        for f in path.glob("*.dump"):
            data = f.read_bytes()
            assert data.startswith(b"MFEBAK1\0") and email.encode() not in data and b"PGDMP" not in data
        assert b"CREATE ROLE" not in (path / "globals.sql").read_bytes()
        wrong = enc.cli(
            "backup", "verify", "--env", enc.env, backup_id, extra={"BKL_PASSPHRASE": "another-passphrase-0123456789"}
        )
        assert (
            wrong.returncode == 1
            and f"the passphrase does not open backup {backup_id}; its files are intact" in wrong.stderr
        )
        listed = json.loads(suite.ok(enc.cli("backup", "list", "--env", enc.env, "--json")).stdout)
        assert [r["verified"] for r in listed if r["id"] == backup_id] == [True]  # a wrong key changes no verdict
        # A damaged file with the right key is a failed verification.
        dump = next(path.glob("auth.dump"))
        intact = dump.read_bytes()
        dump.write_bytes(intact[:-10] + bytes(b ^ 0xFF for b in intact[-10:]))
        damaged = enc.cli("backup", "verify", "--env", enc.env, backup_id)
        assert damaged.returncode == 1 and "auth.dump" in damaged.stderr
        dump.write_bytes(intact)
        forged_backups_are_refused(enc, path, email)
        enc.psql("auth_db", f"DELETE FROM refresh_tokens; DELETE FROM users WHERE email = '{email}'")
        suite.ok(enc.cli("restore", "--env", enc.env, backup_id, "--yes"))
        assert enc.psql("auth_db", f"SELECT count(*) FROM users WHERE email = '{email}'").strip() == "1"
    finally:
        enc.cli("down", "--env", enc.env, "--volumes", "--yes")


def forged_backups_are_refused(enc: Local, made: Path, email: str) -> None:
    """Review finding 4: with backup_passphrase set, a manifest edited to `"encryption": null` beside
    plaintext archives was restored (pg_restore as the superuser, of archives chosen by whoever can write the
    backups folder). The manifest carries a MAC keyed from the passphrase, and a passphrase means every
    file is decrypted: neither a plaintext backup nor an edited manifest is read."""
    manifest = json.loads((made / "manifest.json").read_text())
    assert manifest["mac"] and manifest["encryption"]
    enc.psql("auth_db", f"UPDATE users SET email = 'after-{email}' WHERE email = '{email}'")
    plain = dict(manifest, id="20261206T000000Z-f0f0", encryption=None, mac=None)
    edited = dict(manifest, id="20261206T000001Z-f1f1")
    edited["databases"]["auth"]["tables"] = {"public.users": 0}  # any field: the MAC covers them all
    for forged in (plain, edited):
        folder = made.parent / forged["id"]
        folder.mkdir(mode=0o700)
        for name, entry in forged["files"].items():
            data = (made / name).read_bytes()
            if forged["encryption"] is None:
                decryptor = crypt.Decryptor(PASSPHRASE)
                data = decryptor.update(data) + decryptor.finalize()
                entry.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
            (folder / name).write_bytes(data)
        (folder / "manifest.json").write_text(json.dumps(forged))
    for forged, why in (
        (plain, "is not encrypted"),
        (edited, "has a manifest the passphrase does not authenticate (altered, or another passphrase's)"),
    ):
        for args in (
            ("restore", "--env", enc.env, forged["id"], "--yes"),
            ("backup", "verify", "--env", enc.env, forged["id"]),
        ):
            refused = enc.cli(*args)
            assert refused.returncode == 1, refused.stdout + refused.stderr
            assert f"backup {forged['id']} {why}, and secrets.backup_passphrase is set: refused" in refused.stderr
    assert enc.psql("auth_db", f"SELECT count(*) FROM users WHERE email = 'after-{email}'").strip() == "1"
    enc.psql("auth_db", f"UPDATE users SET email = '{email}' WHERE email = 'after-{email}'")
    for forged in (plain, edited):
        shutil.rmtree(made.parent / forged["id"])


def test_schedule_prints_and_installs_cron_and_systemd(local: Local, tmp_path: Path) -> None:
    cron = suite.ok(local.cli("backup", "schedule", "--env", ENV))
    line = next(x for x in cron.stdout.splitlines() if x.startswith("0 2 * * * root "))
    assert f"backup --env {ENV} --verify --kind scheduled" in line and f"backup prune --env {ENV} --yes" in line
    suite.ok(
        local.cli(
            "backup",
            "schedule",
            "--env",
            ENV,
            "--systemd",
            "--install",
            "--dest",
            str(tmp_path),
            "--env-file",
            "/etc/mfe/bkl.env",
        )
    )
    timer = (tmp_path / f"mfe-deploy-backup-{ENV}.timer").read_text()
    assert "OnCalendar=*-*-* 2:0:00" in timer and "Persistent=true" in timer
    service = (tmp_path / f"mfe-deploy-backup-{ENV}.service").read_text()
    assert "EnvironmentFile=/etc/mfe/bkl.env" in service and service.count("ExecStart=") == 2
    if shutil.which("systemd-analyze"):
        checked = subprocess.run(["systemd-analyze", "calendar", "*-*-* 2:0:00"], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr


def test_backup_without_a_running_database_is_a_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "project"
    shutil.copytree(REPO / "environments", root / "environments")
    port = free_port()
    (root / "environments" / "down.yaml").write_text(
        f"extends: development\nruntime: local\ndatabase:\n  port: {port}\n"
    )
    p = Local(root, {"postgres": port}, {k: v for k, v in os.environ.items() if not k.startswith("POSTGRES_")}, "down")
    done = p.cli("backup", "--env", "down")
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1].startswith("error: the PostgreSQL of down does not answer")
    assert "mfe-deploy up --env down" in done.stderr and "Traceback" not in done.stderr
    left = root / "backups" / "down"
    assert not [d for d in left.iterdir() if d.is_dir()] if left.exists() else True  # the failed backup is gone


def test_up_backs_up_a_database_just_before_migrating_it(local: Local) -> None:
    """`backup.before_migrate` (on by default outside development): only the databases with a migration
    pending and applied ones before it; nothing when nothing is pending."""
    env_file = local.root / "environments" / f"{ENV}.yaml"
    original = env_file.read_text()
    folder = local.root / "migrations-next"
    for service in ("auth", "payments", "admin", "profile"):
        shutil.copytree(REPO / "services" / service / "migrations", folder / service)
    (folder / "auth" / "0009_probe.sql").write_text("CREATE TABLE pre_migration_probe (id int);\n")
    extra = {"MFE_MIGRATIONS_DIR": str(folder)}

    def listed() -> dict[str, dict[str, object]]:
        done = suite.ok(local.cli("backup", "list", "--env", ENV, "--json"))
        return {row["id"]: row for row in json.loads(done.stdout)}

    before = listed()
    env_file.write_text(original + "backup:\n  before_migrate: true\n")
    try:
        up = suite.ok(local.cli("up", "--env", ENV, extra=extra))
        assert "auth: applied 0009_probe" in up.stdout + up.stderr
        new = [row for key, row in listed().items() if key not in before]
        assert [(row["kind"], row["databases"]) for row in new] == [("pre-migration", ["auth"])], new
        again = suite.ok(local.cli("up", "--env", ENV, extra=extra))
        assert len(listed()) == len(before) + 1, again.stdout + again.stderr  # nothing pending: no backup
    finally:
        env_file.write_text(original)
        local.psql("auth_db", "DROP TABLE IF EXISTS pre_migration_probe")
        local.psql("auth_db", "DELETE FROM mfe_schema_migrations WHERE id = '0009_probe'")
