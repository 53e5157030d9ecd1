"""The pure parts of backups: encryption, retention, staleness, the archive's table of contents, the
session answer, schedules, the folder scan, and the tool command lines (recorded, not run)."""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mfe_deploy.backups import crypt, pg, schedule
from mfe_deploy.backups.jobs import BackupError, Backups
from mfe_deploy.backups.store import DatabaseEntry, Entry, FileEntry, Manifest, Store, plan_prune, staleness
from mfe_deploy.calendar import on_calendar
from mfe_deploy.config import loader
from mfe_deploy.console import Console
from mfe_deploy.exec.command import Command
from mfe_deploy.exec.process import LocalProcess
from mfe_deploy.exec.secret import Secret
from tests.conftest import REPO

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def _encrypt(data: bytes, passphrase: str = "correct horse battery") -> bytes:
    enc = crypt.Encryptor(passphrase)
    out = b""
    for i in range(0, len(data), 70_000):  # uneven pieces, as a pipe delivers them
        out += enc.update(data[i : i + 70_000])
    return out + enc.finalize()


def _decrypt(data: bytes, passphrase: str = "correct horse battery") -> bytes:
    dec = crypt.Decryptor(passphrase)
    out = b""
    for i in range(0, len(data), 65_536):
        out += dec.update(data[i : i + 65_536])
    return out + dec.finalize()


@pytest.mark.parametrize("size", [0, 1, crypt.CHUNK - 1, crypt.CHUNK, crypt.CHUNK + 1, 3 * crypt.CHUNK + 17])
def test_encryption_round_trips_at_chunk_boundaries(size: int) -> None:
    data = os.urandom(size)
    sealed = _encrypt(data)
    assert sealed.startswith(crypt.MAGIC) and (size < 64 or data[:64] not in sealed)
    assert _decrypt(sealed) == data


def test_encryption_detects_flips_truncation_reordering_and_wrong_keys() -> None:
    data = os.urandom(2 * crypt.CHUNK + 100)
    sealed = _encrypt(data)
    flipped = bytearray(sealed)
    flipped[len(sealed) // 2] ^= 1
    chunk = crypt.CHUNK + crypt.TAG
    swapped = (
        sealed[: crypt.HEADER]
        + sealed[crypt.HEADER + chunk : crypt.HEADER + 2 * chunk]
        + sealed[crypt.HEADER : crypt.HEADER + chunk]
        + sealed[crypt.HEADER + 2 * chunk :]
    )
    for bad in (bytes(flipped), sealed[:-1], sealed[: crypt.HEADER + chunk], swapped, sealed + b"x"):
        with pytest.raises(crypt.DecryptionFailed):
            _decrypt(bad)
    with pytest.raises(crypt.DecryptionFailed, match="wrong passphrase"):
        _decrypt(sealed, "another passphrase")
    with pytest.raises(crypt.DecryptionFailed, match="not an mfe-deploy encrypted file"):
        _decrypt(b"PGDMP" + b"\0" * 100)


def _entry(n: int, *, complete: bool = True, verified: bool | None = True, age_days: float = 0) -> Entry:
    when = NOW - timedelta(days=age_days, minutes=100 - n)
    manifest = Manifest(
        id=f"b{n:02d}",
        env="e",
        kind="manual",
        started_at=when.isoformat(),
        finished_at=when.isoformat(),
        postgresql={},
        layout="per-service",
        files={},
        databases={},
        release=None,
        tool={},
    )
    record = None if verified is None else {"ok": verified}
    if not complete:
        return Entry(f"b{n:02d}", Path(f"/x/b{n:02d}"), None, problem="interrupted")
    return Entry(f"b{n:02d}", Path(f"/x/b{n:02d}"), manifest, record)


def test_prune_keeps_the_newest_verified_and_drops_interrupted_ones() -> None:
    entries = [_entry(1), _entry(2, complete=False), _entry(3), _entry(4), _entry(5, complete=False), _entry(6)]
    plan = plan_prune(entries, keep=3, max_age_days=None, now=NOW)
    assert [e.id for e in plan.keep] == ["b03", "b04", "b06"]
    assert plan.reasons == {"b01": "beyond the newest 3 verified", "b02": "interrupted", "b05": "interrupted"}


def test_prune_never_counts_unverified_or_failed_backups() -> None:
    entries = [_entry(1), _entry(2, verified=False), _entry(3, verified=None), _entry(4), _entry(5, verified=None)]
    plan = plan_prune(entries, keep=2, max_age_days=None, now=NOW)
    # b01 and b04 are the two verified ones: kept. b05 is newer than all of them: it may be verified later.
    assert [e.id for e in plan.keep] == ["b01", "b04", "b05"]
    assert set(plan.reasons) == {"b02", "b03"}


def test_prune_with_too_few_verified_removes_only_by_age() -> None:
    entries = [_entry(1, verified=None, age_days=40), _entry(2, verified=None, age_days=2), _entry(3)]
    plan = plan_prune(entries, keep=3, max_age_days=30, now=NOW)
    assert plan.reasons == {"b01": "older than 30 days"}
    nothing_verified = plan_prune([_entry(1, verified=None, age_days=40)], keep=3, max_age_days=30, now=NOW)
    assert nothing_verified.remove == []  # never the last copies, verified or not


def test_prune_never_removes_a_damaged_backup() -> None:
    damaged = Entry("b02", Path("/x/b02"), None, problem="unreadable manifest: Expecting value: line 1 column 1")
    entries = [_entry(1), damaged, _entry(3), _entry(4)]
    plan = plan_prune(entries, keep=1, max_age_days=1, now=NOW)
    assert damaged in plan.keep and damaged.damaged
    assert set(plan.reasons) == {"b01", "b03"}


def test_staleness() -> None:
    assert staleness([], 26, NOW) == "no complete backup exists"
    assert staleness([_entry(1, age_days=0.5)], 26, NOW) is None
    late = staleness([_entry(1, age_days=2), _entry(2, complete=False)], 26, NOW)
    assert late is not None and "b01, is 49.6 h old (policy: 26 h)" in late
    failed = staleness([_entry(1), _entry(2, verified=False)], 26, NOW)
    assert failed == "the newest complete backup, b02, failed verification: it may not restore"


TOC = """\
;
; Archive created at 2026-11-24 04:51:13 UTC
;     dbname: auth_db
;     Dumped from database version: 15.18
;
5; 2615 16386 SCHEMA - auth r
6; 2615 2200 SCHEMA - public r
3356; 0 0 ACL - SCHEMA public r
216; 1259 16388 TABLE auth t r
3354; 0 0 SEQUENCE OWNED BY auth t_id_seq r
3348; 0 16388 TABLE DATA auth t r
3349; 0 16396 TABLE DATA public p postgres
3204; 2606 16395 CONSTRAINT auth t t_pkey r
3205; 2606 16395 FK CONSTRAINT auth t t_fk r
"""


def test_toc_names_the_database_and_schemas() -> None:
    toc = pg.parse_toc(TOC)
    assert toc == pg.Toc("auth_db", frozenset({"auth", "public"}))
    assert pg.toc_problem(toc, pg.Target("auth", "auth_db", None, "auth_app")) is None
    assert pg.toc_problem(toc, pg.Target("auth", "payments_db", None, "a")) == (
        "the archive was dumped from database 'auth_db', not 'payments_db'"
    )
    assert pg.toc_problem(toc, pg.Target("auth", "auth_db", "auth", "a")) == (
        "the archive holds schema(s) public, not only 'auth'"
    )


def test_session_answer_and_counts() -> None:
    lines = ["snapshot\t00000003-00000006-1\n", "version\t15.18\n"]
    assert pg.parse_session(lines) == pg.SessionAnswer("00000003-00000006-1", "15.18")
    with pytest.raises(ValueError, match="did not export a snapshot"):
        pg.parse_session(["ERROR: nope"])
    assert pg.parse_counts("count\ta.b\t3\nnoise\ncount\tpublic.x\t0\n") == {"a.b": 3, "public.x": 0}
    assert pg.counts_script("auth").endswith(f"ORDER BY 2;\n\\echo {pg.END}\n")


def test_counts_sql_quotes_the_schema() -> None:
    assert "n.nspname = 'it''s'" in pg.counts_sql("it's")
    assert "NOT IN ('pg_catalog', 'information_schema')" in pg.counts_sql(None)


def test_tool_command_lines_keep_the_password_out_of_argv(tmp_path: Path) -> None:
    secret = Secret("s3cret-value-123")
    local = pg.LocalPostgres(Path("/pg/bin"), 5433, "postgres", secret)
    target = pg.Target("auth", "universal_mfe_dev", "auth", "auth_app")
    dump = pg.dump(local, target, "SNAP")
    assert dump.argv == (
        "/pg/bin/pg_dump",
        "-h",
        "127.0.0.1",
        "-p",
        "5433",
        "-U",
        "postgres",
        "-Fc",
        "--snapshot=SNAP",
        "-n",
        "auth",
        "-d",
        "universal_mfe_dev",
    )
    assert dump.environ() == {"PGPASSWORD": "s3cret-value-123"} and "s3cret" not in str(dump)
    compose = pg.ComposePostgres(lambda: "app-postgres-1", "postgres", secret)
    restore = pg.restore(compose, "auth_db", clean=True)
    assert restore.argv[:6] == ("docker", "exec", "-i", "-e", "PGPASSWORD", "app-postgres-1")
    assert restore.argv[6:] == (
        "pg_restore",
        "-h",
        "127.0.0.1",
        "-U",
        "postgres",
        "--clean",
        "--if-exists",
        "--single-transaction",
        "--exit-on-error",
        "-d",
        "auth_db",
    )
    assert all("s3cret" not in a for a in restore.argv) and restore.environ()["PGPASSWORD"] == "s3cret-value-123"
    assert pg.toc(compose).argv[-2:] == ("pg_restore", "--list")


def test_targets_per_layout() -> None:
    from mfe_deploy.config import loader
    from tests.conftest import REPO

    dev = loader.load(REPO, "development").env
    assert [(t.database, t.schema) for t in pg.targets(dev)] == [
        ("universal_mfe_dev", s) for s in ("auth", "payments", "admin", "profile")
    ]
    staging = loader.load(REPO, "staging").env
    assert [(t.service, t.database, t.schema, t.role) for t in pg.targets(staging, "payments")] == [
        ("payments", "payments_db", None, "payments_app")
    ]


def test_store_lists_only_complete_backups(tmp_path: Path) -> None:
    store = Store(tmp_path / "e")
    manifest = Manifest(
        id="20261124T000000Z-aaaa",
        env="e",
        kind="manual",
        started_at=NOW.isoformat(),
        finished_at=NOW.isoformat(),
        postgresql={"server": "15"},
        layout="shared",
        files={"a.dump": FileEntry("a.dump", 1, "00", "pg_dump-custom")},
        databases={"auth": DatabaseEntry("auth", "db", "auth", {"auth.users": 2})},
        release=None,
        tool={},
    )
    folder = store.begin(manifest.id)
    assert store.complete() == [] and store.scan()[0].problem == "interrupted"
    store.commit(folder, manifest)
    (store.root / "20261124T000001Z-bbbb").mkdir()  # no manifest
    (store.root / "20261124T000002Z-cccc").mkdir()
    (store.root / "20261124T000002Z-cccc" / "manifest.json").write_text("{not json")
    found = store.scan()
    assert [(e.id, e.complete, e.problem) for e in found] == [
        ("20261124T000000Z-aaaa", True, ""),
        ("20261124T000001Z-bbbb", False, "no manifest"),
        ("20261124T000002Z-cccc", False, found[2].problem),
    ]
    assert found[2].problem.startswith("unreadable manifest")
    entry = store.get(None)
    assert entry.manifest == manifest and entry.manifest.rows == 2
    assert json.loads((entry.path / "manifest.json").read_text())["files"]["a.dump"]["sha256"] == "00"
    assert (entry.path / "manifest.json").stat().st_mode & 0o777 == 0o600
    store.remove(entry)
    assert store.complete() == []
    (store.root / ".20261124T000003Z-dddd.removing").mkdir()  # a prune killed mid-way
    assert [p.name for p in store.leftovers()] == [".20261124T000003Z-dddd.removing"]
    assert all(e.id != "20261124T000003Z-dddd" for e in store.scan())


def test_schedules() -> None:
    job = schedule.Job(
        "staging", Path("/srv/app"), ("/usr/local/bin/mfe-deploy",), "30 3 * * 1-5", Path("/etc/mfe/s.env")
    )
    cron = schedule.cron(job)
    assert "30 3 * * 1-5 root /bin/sh -c 'set -a && . /etc/mfe/s.env && set +a && " in cron
    assert "backup --env staging --verify --kind scheduled && " in cron
    # Without an installed script the job runs the module with this Python: separate words, not one.
    module = schedule.Job("e", Path("/p"), ("/venv/bin/python", "-m", "mfe_deploy"), "0 2 * * *")
    assert "/venv/bin/python -m mfe_deploy --project-dir /p backup --env e" in schedule.cron(module)
    units = schedule.systemd(job)
    assert "OnCalendar=Mon..Fri *-*-* 3:30:00" in units["mfe-deploy-backup-staging.timer"]
    assert on_calendar("*/15 * * * *") == "*-*-* *:0/15:00"
    assert on_calendar("0 2 1 * 0,6") == "Sun,Sat *-*-1 2:0:00"
    with pytest.raises(ValueError, match="cannot translate"):
        on_calendar("@daily x y z w")


@dataclass(frozen=True)
class _DeadSession:
    """A PostgreSQL whose client tools are a process that closes its input and exits, as psql does when
    the server ends its session: writing to it breaks the pipe."""

    def tool(self, name: str, *args: str, connect: bool = True) -> Command:
        script = "exec 0<&-; echo 'FATAL:  terminating connection due to administrator command' >&2; sleep 0.3; exit 2"
        return Command(("sh", "-c", script))


def test_a_session_that_exits_early_is_a_one_line_error(tmp_path: Path) -> None:
    env = loader.load(REPO, "development").env
    err = io.StringIO()
    jobs = Backups(env, _DeadSession(), LocalProcess(), Store(tmp_path / "backups"), Console(io.StringIO(), err))
    with pytest.raises(BackupError) as caught:
        jobs.backup(pg.targets(env, "auth"))
    assert (
        str(caught.value)
        == "auth: psql on universal_mfe_dev failed: FATAL:  terminating connection due to administrator command"
    )


def test_scratch_databases_are_named_and_recognised_when_stale() -> None:
    now = 2_000_000_000
    assert pg.scratch_name("auth", now, "ab12cd") == "mfe_verify_2000000000_auth_ab12cd"
    names = [
        "mfe_verify_auth_9f8e7d6c",  # named before the time was part of the name: stale
        pg.scratch_name("auth", now - 3601, "aa"),  # an hour old: a killed verify's
        pg.scratch_name("payments", now - 60, "bb"),  # a verify running now
        "auth_db",
    ]
    assert pg.stale_scratch(names, now) == [names[0], names[1]]


def test_lost_rows_are_counted_per_table_leaving_out_the_migration_history() -> None:
    from mfe_deploy.backups.jobs import lost
    from mfe_deploy.backups.store import DatabaseEntry

    restored = DatabaseEntry("auth", "auth_db", None, {"public.users": 5, "public.mfe_schema_migrations": 2})
    before = DatabaseEntry(
        "auth", "auth_db", None, {"public.users": 8, "public.probe": 1, "public.mfe_schema_migrations": 3}
    )
    assert lost(restored, before) == ["public.probe: 1 row", "public.users: 3 rows"]
    assert lost(before, before) == []
