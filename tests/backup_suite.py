"""The backup acceptance checks, written once and run on every runtime (tests/test_backup_local.py and
tests/test_docker_runtime.py). A Deployment is a project whose stack is up."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import httpx

from tests.pg import bindir
from tests.stack import poll
from tests.test_services_e2e import _profile, _user

MIGRATIONS = "mfe_schema_migrations"


class Deployment(Protocol):
    root: Path
    env: str

    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]: ...
    def popen(self, *args: str) -> subprocess.Popen[str]: ...
    def psql(self, database: str, sql: str) -> str: ...
    def gateway(self) -> httpx.Client: ...
    def places(self) -> dict[str, tuple[str, str]]: ...  # service -> (database, schema)


def ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def tables(d: Deployment, service: str) -> list[str]:
    database, schema = d.places()[service]
    out = d.psql(
        database,
        "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) FROM "
        f"information_schema.tables WHERE table_schema = '{schema}' AND table_type = 'BASE TABLE' "
        "ORDER BY 1",
    )
    return out.split()


def fingerprint(d: Deployment) -> dict[str, tuple[int, str]]:
    """Per table of all four services: the row count and an ordered checksum of every row."""
    out: dict[str, tuple[int, str]] = {}
    for service, (database, _) in d.places().items():
        names = tables(d, service)
        assert names, f"{service} has no tables"
        query = " UNION ALL ".join(
            f"SELECT '{n}', count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM {n} t"
            for n in names
        )
        for line in d.psql(database, query).splitlines():
            name, count, digest = line.split("|")
            out[f"{service}:{name}"] = (int(count), digest)
    return out


def make_data(d: Deployment, users: int = 3) -> None:
    with d.gateway() as gw:
        for n in range(users):
            _, auth = _user(gw)
            assert poll(lambda auth=auth: _profile(gw, auth)) is not None
            paid = gw.post(
                "/api/payments",
                json={"amount": 100 + n, "currency": "EUR"},
                headers={**auth, "Idempotency-Key": f"bk-{time.time_ns()}"},
            )
            assert paid.status_code == 201, paid.text


def wipe(d: Deployment) -> None:
    for service, (database, _) in d.places().items():
        names = [n for n in tables(d, service) if not n.endswith(MIGRATIONS)]
        d.psql(database, f"TRUNCATE {', '.join(names)} CASCADE")


def backups(d: Deployment) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(ok(d.cli("backup", "list", "--env", d.env, "--json")).stdout)
    return rows


def folder(d: Deployment) -> Path:
    return d.root / "backups" / d.env


def new_backup(d: Deployment, *extra: str) -> str:
    done = ok(d.cli("backup", "--env", d.env, "--json", *extra))
    backup_id: str = json.loads(done.stdout)["id"]
    return backup_id


def round_trip(d: Deployment) -> None:
    make_data(d)
    before = fingerprint(d)
    assert sum(c for c, _ in before.values()) > 10
    backup_id = new_backup(d, "--verify")
    wipe(d)
    assert fingerprint(d) != before
    restored = ok(d.cli("restore", "--env", d.env, backup_id, "--yes", "--json"))
    said = json.loads(restored.stdout)  # stdout is the JSON alone
    assert said["backup"] == backup_id and said["services"] and said["pre_restore"] not in (None, backup_id), said
    assert fingerprint(d) == before
    ok(d.cli("health", "--env", d.env))
    with d.gateway() as gw:  # the restored users can log in again
        email = d.psql(d.places()["auth"][0], f"SELECT email FROM {d.places()['auth'][1]}.users LIMIT 1").strip()
        assert gw.post("/api/auth/login", json={"email": email, "password": "correct horse"}).status_code == 200


def corruption_is_refused(d: Deployment, rounds: int = 10) -> None:
    backup_id = new_backup(d)
    path = folder(d) / backup_id
    dumps = sorted(path.glob("*.dump"))
    before, count = fingerprint(d), len(backups(d))
    rng = random.Random(6)
    for _ in range(rounds):
        victim = rng.choice(dumps)
        data = bytearray(victim.read_bytes())
        offset = rng.randrange(len(data))
        data[offset] ^= 1 << rng.randrange(8)
        original = victim.read_bytes()
        victim.write_bytes(bytes(data))
        try:
            verify = d.cli("backup", "verify", "--env", d.env, backup_id)
            assert verify.returncode == 1 and f"{victim.name}: SHA-256 mismatch" in verify.stderr, verify.stderr
            restore = d.cli("restore", "--env", d.env, backup_id, "--yes")
            assert restore.returncode == 1 and "is corrupt, nothing was changed" in restore.stderr, restore.stderr
        finally:
            victim.write_bytes(original)
        assert len(backups(d)) == count  # not even a pre-restore backup: nothing was touched
    assert fingerprint(d) == before


def _final_files_are_whole(path: Path) -> None:
    """Any file under a final name is complete: dumps read to the end, globals carry their trailer."""
    for f in path.iterdir():
        if f.name.endswith(".tmp"):
            continue
        if f.suffix == ".dump":
            done = subprocess.run([str(bindir() / "pg_restore"), "-f", "/dev/null", str(f)], capture_output=True)
            assert done.returncode == 0, f"{f} is partial: {done.stderr.decode()}"
        elif f.name == "globals.sql":
            assert "PostgreSQL database cluster dump complete" in f.read_text(), f"{f} is partial"


def interruption(d: Deployment, rounds: int = 10) -> None:
    # A bulk table makes each dump take long enough for kills to land inside it.
    database, schema = d.places()["admin"]
    d.psql(
        database,
        f"CREATE TABLE IF NOT EXISTS {schema}.bulk AS SELECT g AS id, md5(g::text) AS v "
        "FROM generate_series(1, 300000) g",
    )
    try:
        _interrupt(d, rounds)
    finally:
        d.psql(database, f"DROP TABLE {schema}.bulk")


def _interrupt(d: Deployment, rounds: int) -> None:
    start = time.monotonic()
    new_backup(d)
    duration = time.monotonic() - start
    rng = random.Random(9)
    interrupted = 0
    for _ in range(rounds):
        proc = d.popen("backup", "--env", d.env)
        time.sleep(rng.uniform(0.1, duration))
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        interrupted += proc.returncode == -signal.SIGKILL
    time.sleep(1)  # let orphaned pg_dump processes see their closed pipe
    partial = [p for p in folder(d).iterdir() if p.name.endswith(".partial")]
    assert partial, "no kill landed during a backup"
    listed = {row["id"] for row in backups(d)}
    assert not listed & {p.name.removesuffix(".partial") for p in partial}
    for p in folder(d).iterdir():
        if p.is_dir() and not p.name.startswith("."):
            _final_files_are_whole(p)
    for row in backups(d):
        ok(d.cli("backup", "verify", "--env", d.env, row["id"]))  # every listed backup is whole
    after = new_backup(d)
    assert after in {row["id"] for row in backups(d)}


def _recompute(path: Path, name: str) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    data = (path / name).read_bytes()
    manifest["files"][name].update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    (path / "manifest.json").write_text(json.dumps(manifest))


def failing_restore_changes_nothing(d: Deployment) -> None:
    make_data(d, users=1)
    good = new_backup(d)
    make_data(d, users=1)  # the live data now differs from the backup
    before = fingerprint(d)
    # A dump of another service's data under auth's name, its checksum recomputed: refused up front.
    other = folder(d) / (good + "-other")
    shutil.copytree(folder(d) / good, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["id"] = other.name
    (other / "manifest.json").write_text(json.dumps(manifest))
    shutil.copy(other / "payments.dump", other / "auth.dump")
    _recompute(other, "auth.dump")
    refused = d.cli("restore", "--env", d.env, other.name, "--yes")
    assert refused.returncode == 1 and "does not match this environment, nothing was changed" in refused.stderr
    assert fingerprint(d) == before
    # A dump truncated after its checksum was recomputed: pg_restore fails inside its transaction, the
    # services restored meanwhile are put back from the pre-restore backup.
    cut = _cut_copy(d, good, "auth", "-cut")
    failed = d.cli("restore", "--env", d.env, cut.name, "--yes")
    assert failed.returncode == 1, failed.stderr
    assert "failed, the databases are as they were" in failed.stderr, failed.stderr
    assert fingerprint(d) == before
    ok(d.cli("health", "--env", d.env))
    shutil.rmtree(other)
    shutil.rmtree(cut)


def _cut_copy(d: Deployment, good: str, service: str, suffix: str) -> Path:
    """A copy of backup `good` whose `service` dump loses its last data block (checksums recomputed; the
    table of contents is whole): pg_restore of that one fails inside its transaction, the others restore."""
    cut = folder(d) / (good + suffix)
    shutil.copytree(folder(d) / good, cut)
    manifest = json.loads((cut / "manifest.json").read_text())
    manifest["id"] = cut.name
    (cut / "manifest.json").write_text(json.dumps(manifest))
    dump = cut / f"{service}.dump"
    dump.write_bytes(dump.read_bytes()[:-24])
    _recompute(cut, dump.name)
    return cut


def failing_restore_under_load_keeps_every_acknowledged_write(d: Deployment) -> None:
    """12 clients register users through the gateway while a restore fails on one database and puts the
    others back: every registration that was answered 201 is in the database afterwards. (The put-back
    once came from a backup taken before the services stopped: writes in between were thrown away.)"""
    make_data(d, users=1)
    good = new_backup(d)
    cut = _cut_copy(d, good, "profile", "-cut-under-load")
    acknowledged: list[str] = []
    refused = 0
    stop = threading.Event()

    def client(n: int) -> None:
        nonlocal refused
        with d.gateway() as gw:
            for i in range(2000):  # bounded: the restore ends long before
                if stop.is_set():
                    return
                email = f"load-{n}-{i}-{time.time_ns()}@example.com"
                try:
                    answer = gw.post("/api/auth/register", json={"email": email, "password": "correct horse"})
                except httpx.HTTPError:
                    refused += 1
                    time.sleep(0.05)
                    continue
                if answer.status_code == 201:
                    acknowledged.append(email)
                else:
                    refused += 1
                    time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    try:
        assert poll(lambda: len(acknowledged) >= 12, timeout=30), "the clients could not write before the restore"
        failed = d.cli("restore", "--env", d.env, cut.name, "--yes")
        time.sleep(1)  # writes go on after the services are back
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert failed.returncode == 1 and "failed, the databases are as they were" in failed.stderr, failed.stderr
    assert "auth" in failed.stderr.split("put back from")[0]  # auth was restored, then put back
    database, schema = d.places()["auth"]
    stored = set(d.psql(database, f"SELECT email FROM {schema}.users WHERE email LIKE 'load-%'").split())
    lost = [email for email in acknowledged if email not in stored]
    assert refused > 0, "no request met the fence: the restore did not stop auth while clients wrote"
    assert lost == [], f"{len(lost)} of {len(acknowledged)} acknowledged registrations were lost"
    shutil.rmtree(cut)


def damaged_manifest_is_listed_and_kept(d: Deployment) -> None:
    """One damaged byte in a finished backup's manifest: listed as DAMAGED, never pruned by a rule."""
    made = new_backup(d)
    manifest = folder(d) / made / "manifest.json"
    original = manifest.read_bytes()
    manifest.write_bytes(b"\xff" + original[1:])
    try:
        listed = ok(d.cli("backup", "list", "--env", d.env))
        assert any(line.split()[:1] == [made] and "DAMAGED" in line for line in listed.stdout.splitlines())
        assert f"warning: {made}: unreadable manifest" in listed.stderr
        row = next(r for r in backups(d) if r["id"] == made)
        assert row["complete"] is False and row["problem"].startswith("unreadable manifest")
        ok(d.cli("backup", "prune", "--env", d.env, "--keep", "100", "--confirm"))
        assert (folder(d) / made / "auth.dump").exists(), "prune removed a backup whose dumps may be whole"
    finally:
        manifest.write_bytes(original)


def retention(d: Deployment) -> None:
    for entry in folder(d).iterdir() if folder(d).exists() else []:  # start from an empty folder
        if entry.is_dir():
            shutil.rmtree(entry)
    made = [new_backup(d, "--verify") for _ in range(4)]
    for _ in range(2):  # two interrupted ones, between complete ones
        proc = d.popen("backup", "--env", d.env)
        assert poll(lambda: any(p.name.endswith(".partial") for p in folder(d).iterdir()), timeout=30, interval=0.02)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        made.append(new_backup(d, "--verify"))
    dry = ok(d.cli("backup", "prune", "--env", d.env, "--keep", "3"))
    assert "dry run" in dry.stdout and len(backups(d)) == 6
    pruned = ok(d.cli("backup", "prune", "--env", d.env, "--keep", "3", "--confirm"))
    assert "removed" in pruned.stdout
    assert [row["id"] for row in backups(d)] == made[-3:]
    assert sorted(p.name for p in folder(d).iterdir() if not p.name.startswith(".")) == made[-3:]
    ok(d.cli("backup", "check", "--env", d.env))
    fresh = json.loads(ok(d.cli("backup", "check", "--env", d.env, "--json")).stdout)
    assert fresh["ok"] is True and fresh["newest"] == made[-1], fresh
    stale = d.cli("backup", "check", "--env", d.env, "--max-hours", "0.00001")
    assert stale.returncode == 1 and "is 0.0 h old (policy" in stale.stderr
    stale_json = d.cli("backup", "check", "--env", d.env, "--max-hours", "0.00001", "--json")
    assert stale_json.returncode == 1 and json.loads(stale_json.stdout)["ok"] is False
