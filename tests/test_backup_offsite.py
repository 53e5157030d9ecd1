"""Offsite copies of backups (backup.offsite) in a real S3 server, SeaweedFS on loopback, from the local
runtime's real PostgreSQL: each backup goes up as it completes, checksums end to end; a machine that never
held a backup restores it from the store; a changed byte is found before a database is touched; a store
that is down fails the backup with one line, keeps the local copy, and `backup sync` uploads it later."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import backup_suite as suite
from tests.local_project import LocalProject, make_local_project
from tests.receiver import Receiver, receiver
from tests.servers import S3, s3_server

ENV = "bko"
BUCKET = "mfe-backups"
PREFIX = "ci/"


@pytest.fixture(scope="module")
def s3() -> Iterator[S3]:
    with s3_server(BUCKET) as server:
        yield server


@pytest.fixture(scope="module")
def hook() -> Iterator[Receiver]:
    with receiver() as got:
        yield got


def offsite_project(root: Path, s3: S3, hook: Receiver) -> LocalProject:
    """A local-runtime project of the environment ENV whose backups go to the S3 server."""
    extra = f"""backup:
  offsite:
    endpoint: {s3.endpoint}
    bucket: {BUCKET}
    prefix: {PREFIX}
    access_key_id: ${{BKO_S3_KEY}}
    secret_access_key: ${{BKO_S3_SECRET}}
    part_size: 5m
notify:
  timeout: 2
  attempts: 1
  webhooks:
    - url: ${{BKO_HOOK}}
      events: [backup.failed]
"""
    environ = {"BKO_S3_KEY": s3.access_key, "BKO_S3_SECRET": s3.secret_key, "BKO_HOOK": hook.url("/hook")}
    return make_local_project(root, ENV, layout="per-service", extra_yaml=extra, extra_environ=environ)


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory, s3: S3, hook: Receiver) -> Iterator[LocalProject]:
    p = offsite_project(tmp_path_factory.mktemp("offsite") / "project", s3, hook)
    suite.ok(p.cli("up", "--env", ENV))
    try:
        yield p
    finally:
        p.cli("down", "--env", ENV, "--volumes", "--yes")


def offsite_rows(p: LocalProject) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(
        suite.ok(p.cli("backup", "list", "--env", ENV, "--offsite", "--json")).stdout
    )
    return rows


def key(backup_id: str, name: str) -> str:
    return f"{PREFIX}{ENV}/{backup_id}/{name}"


def no_secret(s3: S3, *texts: str) -> None:
    for text in texts:
        assert s3.secret_key not in text and s3.access_key not in text


def test_every_backup_goes_up_with_each_files_sha256_and_the_manifest_last(local: LocalProject, s3: S3) -> None:
    suite.make_data(local, users=2)
    done = suite.ok(local.cli("backup", "--env", ENV, "--verify"))
    no_secret(s3, done.stdout, done.stderr)
    backup_id = suite.backups(local)[-1]["id"]
    manifest = json.loads((suite.folder(local) / backup_id / "manifest.json").read_text())
    client = s3.client()
    for name, entry in manifest["files"].items():
        head = client.head_object(Bucket=BUCKET, Key=key(backup_id, name), ChecksumMode="ENABLED")
        assert head["Metadata"]["sha256"] == entry["sha256"]
        assert head["ContentLength"] == entry["size"]
        body = client.get_object(Bucket=BUCKET, Key=key(backup_id, name))["Body"].read()
        assert hashlib.sha256(body).hexdigest() == entry["sha256"]
    # the manifest is the local one, byte for byte; the verification went up too
    sent = client.get_object(Bucket=BUCKET, Key=key(backup_id, "manifest.json"))["Body"].read()
    assert sent == (suite.folder(local) / backup_id / "manifest.json").read_bytes()
    row = next(r for r in offsite_rows(local) if r["id"] == backup_id)
    assert row["complete"] and row["verified"] is True
    # the audit log (and the release ledger where the runtime keeps one) went up beside the backups, as
    # they were when the backup completed: what was recorded here since only follows them
    state = local.root / ".mfe" / ENV / "state"
    sent_state = 0
    for name in ("releases.jsonl", "audit.jsonl"):
        if (state / name).exists():
            there = client.get_object(Bucket=BUCKET, Key=f"{PREFIX}{ENV}/state/{name}")["Body"].read()
            assert there and (state / name).read_bytes().startswith(there)
            sent_state += 1
    assert sent_state >= 1


def test_an_upload_cut_short_is_not_listed_as_a_backup(local: LocalProject, s3: S3) -> None:
    client = s3.client()
    client.put_object(Bucket=BUCKET, Key=key("20260101T000000Z-dead", "auth.dump"), Body=b"half")
    rows = {r["id"]: r for r in offsite_rows(local)}
    assert "20260101T000000Z-dead" not in rows  # no manifest: cut short, for sync and prune, never restored
    refused = local.cli("restore", "--env", ENV, "20260101T000000Z-dead", "--from", "offsite", "--yes")
    assert refused.returncode == 1 and "no complete backup '20260101T000000Z-dead'" in refused.stderr
    client.delete_object(Bucket=BUCKET, Key=key("20260101T000000Z-dead", "auth.dump"))


def test_a_machine_that_never_held_a_backup_restores_it_from_the_store(local: LocalProject, s3: S3) -> None:
    suite.make_data(local, users=2)
    before = suite.fingerprint(local)
    backup_id = suite.new_backup(local)
    shutil.rmtree(suite.folder(local))  # this machine's backups are lost
    suite.wipe(local)
    assert suite.fingerprint(local) != before
    restored = suite.ok(local.cli("restore", "--env", ENV, backup_id, "--from", "offsite", "--yes"))
    no_secret(s3, restored.stdout, restored.stderr)
    assert f"from {backup_id}" in restored.stdout
    assert suite.fingerprint(local) == before
    # downloaded and checked into the local folder, and the pre-restore backup went up as it completed
    assert (suite.folder(local) / backup_id / "manifest.json").exists()
    kinds = {r["id"]: r["kind"] for r in offsite_rows(local)}
    assert "pre-restore" in kinds.values()


def test_a_changed_byte_offsite_is_found_and_refused_before_any_database_is_touched(
    local: LocalProject, s3: S3
) -> None:
    backup_id = suite.new_backup(local)
    manifest = json.loads((suite.folder(local) / backup_id / "manifest.json").read_text())
    name = next(n for n in manifest["files"] if n != "globals.sql")
    client = s3.client()
    original = client.get_object(Bucket=BUCKET, Key=key(backup_id, name))["Body"].read()
    changed = bytearray(original)
    changed[len(changed) // 2] ^= 0x01
    metadata = {"sha256": manifest["files"][name]["sha256"]}  # the store's object, rotted in place
    client.put_object(Bucket=BUCKET, Key=key(backup_id, name), Body=bytes(changed), Metadata=metadata)
    verified = local.cli("backup", "verify", "--env", ENV, "--offsite", backup_id)
    assert verified.returncode == 1, verified.stdout + verified.stderr
    assert f"{backup_id}/{name}: SHA-256" in verified.stderr and "does not match" in verified.stderr
    shutil.rmtree(suite.folder(local) / backup_id)  # not here: the offsite copy is all there is
    before = suite.fingerprint(local)
    refused = local.cli("restore", "--env", ENV, backup_id, "--from", "offsite", "--yes")
    assert refused.returncode == 1 and "does not match" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert suite.fingerprint(local) == before
    assert not (suite.folder(local) / backup_id).exists()  # nothing of it was kept
    assert not list(suite.folder(local).glob("*.partial"))
    client.put_object(Bucket=BUCKET, Key=key(backup_id, name), Body=original, Metadata=metadata)


def test_a_store_that_is_down_fails_the_backup_in_one_line_and_sync_uploads_it_later(
    local: LocalProject, s3: S3, hook: Receiver
) -> None:
    s3.stop()
    try:
        failed = local.cli("backup", "--env", ENV)
    finally:
        s3.start()
    assert failed.returncode == 1, failed.stdout + failed.stderr
    no_secret(s3, failed.stdout, failed.stderr)
    assert "Traceback" not in failed.stderr
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and s3.endpoint in errors[0] and "backup sync" in errors[0], failed.stderr
    kept = suite.backups(local)[-1]  # the local copy: complete, listed
    assert kept["complete"] and kept["kind"] == "manual"
    assert kept["id"] not in {r["id"] for r in offsite_rows(local) if r["complete"]}
    posts = hook.wait(1)
    assert any(json.loads(p.body)["event"] == "backup.failed" for p in posts)
    synced = suite.ok(local.cli("backup", "sync", "--env", ENV, "--json"))
    assert kept["id"] in json.loads(synced.stdout)["uploaded"]
    assert kept["id"] in {r["id"] for r in offsite_rows(local) if r["complete"]}
    again = suite.ok(local.cli("backup", "sync", "--env", ENV, "--json"))
    assert json.loads(again.stdout)["uploaded"] == []


def test_prune_keeps_the_newest_verified_on_both_sides(local: LocalProject, s3: S3) -> None:
    for _ in range(3):
        suite.new_backup(local, "--verify")
    suite.ok(local.cli("backup", "prune", "--env", ENV, "--keep", "2", "--yes"))
    newest = [r["id"] for r in suite.backups(local) if r["verified"]][-2:]
    local_ids = [r["id"] for r in suite.backups(local) if r["complete"]]
    offsite_ids = [r["id"] for r in offsite_rows(local) if r["complete"]]
    assert len(newest) == 2 and set(newest) <= set(local_ids) and set(newest) <= set(offsite_ids)
    assert [i for i in local_ids if i < newest[0]] == [], local_ids  # older ones went, here and there
    assert [i for i in offsite_ids if i < newest[0]] == [], offsite_ids


def test_backup_check_covers_the_offsite_copy(local: LocalProject, s3: S3) -> None:
    suite.ok(local.cli("backup", "--env", ENV))
    suite.ok(local.cli("backup", "check", "--env", ENV))
    client = s3.client()
    for row in offsite_rows(local):
        client.delete_object(Bucket=BUCKET, Key=key(row["id"], "manifest.json"))
    stale = local.cli("backup", "check", "--env", ENV)
    assert stale.returncode == 1 and "offsite" in stale.stderr and "no complete backup" in stale.stderr
    suite.ok(local.cli("backup", "sync", "--env", ENV))
    suite.ok(local.cli("backup", "check", "--env", ENV))


def test_recover_brings_the_stack_back_in_an_empty_project_folder_from_the_store_alone(
    local: LocalProject, s3: S3, hook: Receiver, tmp_path: Path
) -> None:
    """A second project folder holding only the environment files (a new machine: no backups, no state,
    no data): `recover` starts the stack, loads the newest offsite backup, and every row is back."""
    suite.make_data(local, users=2)
    backup_id = suite.new_backup(local)
    before = suite.fingerprint(local)
    elsewhere = offsite_project(tmp_path / "elsewhere", s3, hook)
    assert not (elsewhere.root / "backups").exists() and not (elsewhere.root / ".mfe").exists()
    try:
        done = suite.ok(elsewhere.cli("recover", "--env", ENV, "--yes"))
        no_secret(s3, done.stdout, done.stderr)
        assert f"recovered from {backup_id} in " in done.stdout and "recovery point" in done.stdout
        assert suite.fingerprint(elsewhere) == before
        suite.ok(elsewhere.cli("health", "--env", ENV))
        # the history goes on here: the audit log as the store had it, then this recover
        audit = (elsewhere.root / ".mfe" / ENV / "state" / "audit.jsonl").read_text().splitlines()
        assert json.loads(audit[-1])["action"] == "recover" and len(audit) > 1
        # what recover did here never became the store's newest backup
        assert [r["id"] for r in offsite_rows(local) if r["complete"]][-1] == backup_id
    finally:
        elsewhere.cli("down", "--env", ENV, "--volumes", "--yes")


def test_no_offsite_store_is_a_clear_error(tmp_path: Path) -> None:
    p = make_local_project(tmp_path / "project", "bkn")
    done = p.cli("backup", "list", "--env", "bkn", "--offsite")
    assert done.returncode == 1
    assert "environments/bkn.yaml: backup.offsite is not set" in done.stderr


def test_the_stores_credentials_are_in_no_file_argv_or_server_environment(local: LocalProject, s3: S3) -> None:
    """The credentials come from the operator's environment into the CLI's S3 client only: no file of
    the project (bundle, env files, backups, state), no process's argv, and no environment of the servers
    the runtime started (supervisord and its programs) holds them."""
    suite.new_backup(local)
    for path in local.root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            assert s3.secret_key.encode() not in data and s3.access_key.encode() not in data, path
    seen = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        assert s3.secret_key.encode() not in argv and s3.access_key.encode() not in argv
        if str(local.root).encode() in argv:  # a server of this project's stack
            seen += 1
            assert s3.secret_key.encode() not in environ, argv[:200]
    assert seen >= 3  # supervisord, PostgreSQL, the services: the check looked at them
