"""database.pitr with backup.offsite, on the local runtime: pgBackRest's second repository is on the S3 store
(the real SeaweedFS server over HTTPS, with a CA of the test's own, as pgBackRest requires). The WAL goes there
as it is written and every full backup too; `restore --to-time T --from offsite` reads that copy alone. The
store's key is in one file only, pgBackRest's configuration (0600, the cluster's user's), never in an argv
or a server's environment."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mfe_deploy.local_bundle import LocalLayout
from mfe_deploy.runtimes.local import machine
from tests import backup_suite as suite
from tests.local_project import LocalProject, make_local_project
from tests.lost_host import elsewhere, lose_and_recover
from tests.servers import S3, s3_server
from tests.test_pitr import pay, payments, running, with_pitr

ENV = "pto"
BUCKET = "pto-backups"
PREFIX = "site/"

pytestmark = pytest.mark.skipif(shutil.which("pgbackrest") is None, reason="pgbackrest: run scripts/setup-system")


def offsite_yaml(endpoint: str) -> str:
    return f"""backup:
  offsite:
    endpoint: {endpoint}
    bucket: {BUCKET}
    prefix: {PREFIX}
    access_key_id: ${{PTO_S3_KEY}}
    secret_access_key: ${{PTO_S3_SECRET}}
    ca_file: offsite-ca.pem
"""


@pytest.fixture(scope="module")
def s3() -> Iterator[S3]:
    with s3_server(BUCKET, https=True) as server:
        yield server


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory, s3: S3) -> Iterator[LocalProject]:
    root = tmp_path_factory.mktemp("pto") / "project"
    environ = {"PTO_S3_KEY": s3.access_key, "PTO_S3_SECRET": s3.secret_key}
    p = make_local_project(root, ENV, layout="per-service", extra_yaml=offsite_yaml(s3.endpoint), extra_environ=environ)
    shutil.copy(s3.ca_file, root / "offsite-ca.pem")
    with_pitr(root, ENV)
    with running(p, ENV):
        yield p


def pitr_root(p: LocalProject) -> Path:
    bundle = (p.root / ".mfe" / ENV).resolve()
    return LocalLayout(bundle, machine.pg_outside(bundle) if machine.as_root() else None).pitr.root


def repository(s3: S3) -> list[str]:
    """Every key of pgBackRest's repository in the bucket."""
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{PREFIX}{ENV}.pgbackrest/")
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def info_files(s3: S3) -> dict[str, bytes]:
    """pgBackRest's stanza files in the bucket: which cluster the copy is of (a WAL push leaves them be)."""
    folder = f"{PREFIX}{ENV}.pgbackrest"
    keys = [f"{folder}/archive/{ENV}/archive.info", f"{folder}/backup/{ENV}/backup.info"]
    return {key: s3.client().get_object(Bucket=BUCKET, Key=key)["Body"].read() for key in keys}


def offsite_window(p: LocalProject) -> str:
    listed = suite.ok(p.cli("backup", "list", "--env", ENV, "--offsite"))
    return next(x for x in listed.stdout.splitlines() if x.startswith("point in time (the offsite copy):"))


def test_the_wal_and_every_full_backup_go_offsite_and_a_restore_to_a_time_reads_them_alone(
    local: LocalProject, s3: S3
) -> None:
    keys = repository(s3)
    assert any(f"/archive/{ENV}/" in k for k in keys), keys  # the WAL `up` wrote, archived there
    assert any(f"/backup/{ENV}/" in k and k.endswith("/backup.manifest") for k in keys), keys  # up's full backup
    suite.ok(local.cli("backup", "--env", ENV))  # a full backup in each repository
    line = offsite_window(local)
    assert "any moment from" in line and int(line.rsplit("; ", 1)[1].split()[0]) == 2, line
    assert not any(k.startswith(f"{PREFIX}{ENV}/") for k in keys)  # beside the dumps' folder, not inside it

    first = pay(local, 4, "first")
    time.sleep(1.5)
    moment = datetime.now(UTC)
    time.sleep(1.5)
    second = pay(local, 4, "second")
    done = suite.ok(local.cli("restore", "--env", ENV, "--to-time", moment.isoformat(), "--from", "offsite", "--yes"))
    assert f"restored to {moment.isoformat()}" in done.stdout, done.stdout
    after = payments(local)
    assert set(first) <= set(after) and not set(second) & set(after)
    log = (pitr_root(local) / "log" / f"{ENV}-restore.log").read_text()
    assert "repo2: restore backup set" in log, log[-2000:]  # pgBackRest read the offsite copy
    suite.ok(local.cli("health", "--env", ENV))


def test_the_stores_key_is_in_pgbackrests_private_configuration_only(local: LocalProject, s3: S3) -> None:
    secret = s3.secret_key.encode()
    holders = [
        path
        for folder in (local.root, pitr_root(local))
        for path in folder.rglob("*")
        if path.is_file() and not path.is_symlink() and secret in path.read_bytes()
    ]
    conf = pitr_root(local) / "pgbackrest.conf"
    assert holders == [conf] and conf.stat().st_mode & 0o777 == 0o600, holders
    seen = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv, environ = (proc / "cmdline").read_bytes(), (proc / "environ").read_bytes()
        except OSError:
            continue
        assert secret not in argv and s3.access_key.encode() not in argv
        if str(local.root).encode() in argv:
            seen += 1
            assert secret not in environ, argv[:200]
    assert seen >= 3


def test_pitr_with_a_plain_http_store_is_refused_naming_the_field(tmp_path: Path) -> None:
    p = make_local_project(tmp_path / "project", "ptx", extra_yaml=offsite_yaml("http://127.0.0.1:9"))
    with_pitr(p.root, "ptx")
    done = p.cli("plan", "--env", "ptx", extra={"PTO_S3_KEY": "k", "PTO_S3_SECRET": "s"})
    said = " ".join(done.stderr.split())
    assert done.returncode == 2 and "backup.offsite.endpoint" in said and "HTTPS only" in said, said
    assert "ptx.yaml" in said and "Traceback" not in said


def test_a_new_cluster_elsewhere_never_archives_over_the_offsite_copy(
    local: LocalProject, s3: S3, tmp_path: Path
) -> None:
    """Another machine (here: another project folder) starting ENV afresh with the same store: its up is
    refused, saying whose copy is there and what to do; the copy is untouched."""
    before = info_files(s3)
    environ = {"PTO_S3_KEY": s3.access_key, "PTO_S3_SECRET": s3.secret_key}
    root = tmp_path / "elsewhere"
    p = make_local_project(root, ENV, layout="per-service", extra_yaml=offsite_yaml(s3.endpoint), extra_environ=environ)
    shutil.copy(s3.ca_file, root / "offsite-ca.pem")
    with_pitr(root, ENV)
    try:
        done = p.cli("up", "--env", ENV)
        said = " ".join(done.stderr.split())
        assert done.returncode == 1 and "already holds the WAL and backups of another PostgreSQL cluster" in said, said
        assert f"{BUCKET}/{PREFIX}{ENV}.pgbackrest/" in said and s3.secret_key not in said
        assert info_files(s3) == before
    finally:
        p.cli("down", "--env", ENV, "--volumes", "--yes")


LOST = "plh"  # the environment whose host is lost: its own stanza and folder in the bucket


def test_a_host_lost_under_writes_is_recovered_elsewhere_from_the_offsite_wal(s3: S3, tmp_path: Path) -> None:
    """Writers record every payment acknowledged; the host is killed and its folders deleted; `recover` in
    a second, empty project folder (the environment files, the CA and the secrets alone) restores the
    cluster from the offsite WAL and starts the stack on it. Every write acknowledged more than
    archive_timeout + 5 s before the loss is there; the figures are printed."""
    environ = {"PTO_S3_KEY": s3.access_key, "PTO_S3_SECRET": s3.secret_key}
    first = make_local_project(
        tmp_path / "lost" / "project",
        LOST,
        layout="per-service",
        extra_yaml=offsite_yaml(s3.endpoint),
        extra_environ=environ,
    )
    shutil.copy(s3.ca_file, first.root / "offsite-ca.pem")
    with_pitr(first.root, LOST)  # archive_timeout: 2s
    other = elsewhere(first, tmp_path / "elsewhere", "offsite-ca.pem")
    try:
        # 15 s of writes: several WAL segments archived (archive_timeout 2 s), the last not
        got = lose_and_recover(first, other, 15)
        done = got.recover
        assert done.returncode == 0, done.stdout + done.stderr
        assert "recovered from the offsite WAL in " in done.stdout, done.stdout
        assert "recovery point: the last transaction replayed was at 20" in done.stdout, done.stdout
        assert s3.secret_key not in done.stdout + done.stderr
        print(
            f"\nlost host: {len(got.acked)} writes acknowledged, {len(got.missing)} lost; recovery point "
            f"{got.point:.1f}s (archive_timeout 2s); recovery time {got.seconds:.1f}s; {done.stdout.strip()}"
        )
        bound = 2 + 5
        assert len(got.acked) > 50, len(got.acked)
        assert [key for key, t in got.missing if t < got.lost_at - bound] == [], (got.missing, got.lost_at)
        suite.ok(other.cli("health", "--env", LOST))
        # The cluster archives on from here: the offsite copy's window goes on, a write after it included.
        pay(other, 1, "after-recover")
    finally:
        other.cli("down", "--env", LOST, "--volumes", "--yes")
