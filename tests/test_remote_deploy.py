"""The docker runtime driven over SSH: a real sshd on loopback is the remote host, with this machine's
Docker engine behind it. The bundle, the release ledger, the deploy lock, the audit log and the backups
live in the remote folder; the local project directory only holds the environment files.

Needs root, openssh-server, a Docker engine and the stand-in images (.ci/run provides all of them)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, strong_secrets
from tests.engines import STANDINS, engine_answers, remove_images
from tests.pg import free_port
from tests.sshd import SSHD, Sshd, sshd
from tests.stack import poll
from tests.test_services_e2e import _user

ENV = "rmt"

if os.geteuid() != 0 or not SSHD.exists() or not engine_answers():
    if os.environ.get("MFE_REQUIRE_DOCKER") == "1":
        raise RuntimeError("MFE_REQUIRE_DOCKER=1 but no sshd, root or Docker engine for the remote tests")
    pytest.skip("needs root, openssh-server and a Docker engine", allow_module_level=True)


@dataclass
class Remote:
    roots: list[Path]  # two project directories, as two operators' laptops
    remote_dir: Path  # the environment's folder on the "remote" host
    https: int
    environ: dict[str, str]
    outputs: list[str] = field(default_factory=list)

    def cli(self, *args: str, root: int = 0, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "mfe_deploy", "-C", str(self.roots[root]), *args],
            capture_output=True,
            text=True,
            env=self.environ,
            timeout=timeout,
            check=False,
        )
        self.outputs += [done.stdout, done.stderr]
        return done

    def popen(self, *args: str, root: int = 0) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "mfe_deploy", "-C", str(self.roots[root]), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.environ,
        )

    def gateway(self) -> httpx.Client:
        return httpx.Client(base_url=f"https://localhost:{self.https}", verify=False, timeout=15)

    def psql(self, database: str, sql: str) -> str:
        out = subprocess.run(
            [
                "docker",
                "ps",
                "-q",
                "--filter",
                f"label=com.docker.compose.project=universal-mfe-{ENV}",
                "--filter",
                "label=com.docker.compose.service=postgres",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        done = subprocess.run(
            [
                "docker",
                "exec",
                out[0],
                "psql",
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "postgres",
                "-d",
                database,
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()


def _environment(port: int, key: Path, known: Path, remote_dir: Path, http: int, https: int) -> str:
    return f"""\
extends: staging
target: ssh://root@127.0.0.1:{port}
runtime: docker
ssh:
  identity_file: {key}
  known_hosts: {known}
  remote_dir: {remote_dir}
  connect_timeout: 5
nginx:
  domain: localhost
  http_port: {http}
  https_port: {https}
images:
  postgres: {STANDINS[0]}
  redis: {STANDINS[1]}
  rabbitmq: {STANDINS[2]}
  nginx: {STANDINS[3]}
  service_base: {STANDINS[4]}
  services_prefix: mfe-test
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    with sshd(tmp_path_factory.mktemp("sshd")) as s:
        yield s


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory, server: Sshd) -> Iterator[Remote]:
    base = tmp_path_factory.mktemp("remote")
    remove_images("mfe-test")  # fixed tags: built from this checkout, not left by an older one
    http, https = free_port(), free_port()
    roots = []
    for name in ("laptop-a", "laptop-b"):
        root = base / name
        shutil.copytree(REPO / "environments", root / "environments")
        (root / "environments" / f"{ENV}.yaml").write_text(
            _environment(server.port, server.user_key, base / "known_hosts", base / "host" / "mfe", http, https)
        )
        roots.append(root)
    r = Remote(roots, base / "host" / "mfe", https, {**os.environ, **strong_secrets(), "HOME": str(base)})
    trusted = r.cli("hosts", "trust", "--env", ENV, "--yes")
    assert trusted.returncode == 0, trusted.stderr
    up = r.cli("up", "--env", ENV, "--version", "v1")
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        yield r
    finally:
        r.cli("down", "--env", ENV, "--volumes", "--yes")


def test_up_runs_the_stack_from_a_bundle_on_the_remote_host(remote: Remote) -> None:
    health = remote.cli("health", "--env", ENV)
    assert health.returncode == 0, health.stdout + health.stderr
    status = json.loads(remote.cli("status", "--env", ENV, "--json").stdout)
    assert {r["health"] for r in status} == {"healthy"}
    assert {r["version"] for r in status if r["name"] == "auth"} == {"v1"}
    with remote.gateway() as gw:
        assert gw.get("/health").status_code == 200
    # The bundle is on the host, env files 0600 in a 0700 folder; nothing of it on the operator's side.
    assert (remote.remote_dir / "compose.yml").is_file()
    env_files = [p for p in remote.remote_dir.rglob("*") if p.is_file() and p.name.endswith(".env")]
    assert env_files and all(p.stat().st_mode & 0o777 == 0o600 for p in env_files)
    assert remote.remote_dir.stat().st_mode & 0o077 == 0
    assert not (remote.roots[0] / ".mfe" / ENV / "compose.yml").exists()
    # The state is the host's: the second operator sees the first one's release and history.
    releases = json.loads(remote.cli("releases", "--env", ENV, "--json", root=1).stdout)
    assert [(r["kind"], r["outcome"], r["versions"]["api-gateway"]) for r in releases][:1] == [
        ("up", "succeeded", "v1")
    ]
    history = json.loads(remote.cli("history", "--env", ENV, "--json", root=1).stdout)
    assert ("up", "ok") in [(h["action"], h["result"]) for h in history]
    logs = remote.cli("logs", "--env", ENV, "auth", "--tail", "5")
    assert logs.returncode == 0 and logs.stdout.strip(), logs.stderr
    migrations = remote.cli("migrate", "status", "--env", ENV, "--json")
    assert migrations.returncode == 0, migrations.stderr
    assert {m["state"] for o in json.loads(migrations.stdout) for m in o["migrations"]} == {"applied"}


def test_a_second_up_from_another_directory_is_refused_naming_the_holder(remote: Remote) -> None:
    lock = remote.remote_dir / "state" / "deploy.lock"
    first = remote.popen("up", "--env", ENV, "--version", "v1", root=0)
    try:
        assert poll(lock.exists, timeout=30, interval=0.02), "the first up never took the lock"
        second = remote.cli("up", "--env", ENV, "--version", "v1", root=1)
        assert second.returncode == 3, second.stderr
        assert second.stderr.startswith("error: the environment is locked by ")
        assert f"pid {first.pid} running `mfe-deploy -C {remote.roots[0]} up --env {ENV} --version v1`" in second.stderr
        status = remote.cli("lock", "status", "--env", ENV, root=1)
        assert f"pid {first.pid}" in status.stdout or "unlocked" in status.stdout
    finally:
        out, err = first.communicate(timeout=600)
        remote.outputs += [out, err]
    assert first.returncode == 0, err
    assert not lock.exists()


def test_rollback_on_the_remote_host(remote: Remote) -> None:
    v2 = remote.cli("up", "--env", ENV, "--version", "v2")
    assert v2.returncode == 0, v2.stdout + v2.stderr
    back = remote.cli("rollback", "api-gateway", "--env", ENV, root=1)
    assert back.returncode == 0, back.stderr
    assert back.stdout.startswith("api-gateway: now v1 (release ")
    status = json.loads(remote.cli("status", "--env", ENV, "--json").stdout)
    assert {r["version"] for r in status if r["name"] == "api-gateway"} == {"v1"}
    assert {r["health"] for r in status if r["name"] == "api-gateway"} == {"healthy"}
    with remote.gateway() as gw:
        assert gw.get("/health").status_code == 200
    releases = json.loads(remote.cli("releases", "--env", ENV, "--json").stdout)
    assert [(r["kind"], r["versions"]["api-gateway"]) for r in releases][-2:] == [("up", "v2"), ("rollback", "v1")]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_backup_download_round_trip(remote: Remote) -> None:
    with remote.gateway() as gw:
        _user(gw)
    users_before = remote.psql("auth_db", "SELECT count(*) FROM users")
    made = remote.cli("backup", "--env", ENV, "--download", "--json")
    assert made.returncode == 0, made.stderr
    row = json.loads(made.stdout)
    local, there = Path(row["local"]), remote.remote_dir / "backups" / row["id"]
    manifest = json.loads((there / "manifest.json").read_text())
    assert (local / "manifest.json").read_text() == (there / "manifest.json").read_text()
    for name, f in manifest["files"].items():
        assert _sha256(local / name) == _sha256(there / name) == f["sha256"]
        assert (there / name).stat().st_mode & 0o777 == 0o600
    # Without --download the backup stays on the host only.
    plain = json.loads(remote.cli("backup", "--env", ENV, "--json").stdout)
    assert plain["local"] is None and (remote.remote_dir / "backups" / plain["id"] / "manifest.json").exists()
    assert not (local.parent / plain["id"]).exists()
    listed = json.loads(remote.cli("backup", "list", "--env", ENV, "--json", root=1).stdout)
    assert {row["id"], plain["id"]} <= {r["id"] for r in listed}

    # The other operator downloads it; a corrupted remote copy is refused and nothing is kept.
    (there / "auth.dump").write_bytes((there / "auth.dump").read_bytes()[:-10] + b"0123456789")
    bad = remote.cli("backup", "download", "--env", ENV, row["id"], root=1)
    assert bad.returncode == 1 and "does not match the manifest" in bad.stderr
    b_store = remote.roots[1] / "backups" / ENV
    assert not any(b_store.glob(f"{row['id']}*"))
    shutil.copy(local / "auth.dump", there / "auth.dump")
    good = remote.cli("backup", "download", "--env", ENV, row["id"], root=1)
    assert good.returncode == 0, good.stderr
    assert _sha256(b_store / row["id"] / "auth.dump") == manifest["files"]["auth.dump"]["sha256"]

    # Restore from the host's copy: the user made after the backup is gone again.
    with remote.gateway() as gw:
        _user(gw)
    assert remote.psql("auth_db", "SELECT count(*) FROM users") != users_before
    restored = remote.cli("restore", "--env", ENV, plain["id"], "--yes", root=1)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert remote.psql("auth_db", "SELECT count(*) FROM users") == users_before
    kinds = [json.loads(m.read_text())["kind"] for m in (remote.remote_dir / "backups").glob("*/manifest.json")]
    assert "pre-restore" in kinds  # taken before the restore, kept on the host
    health = remote.cli("health", "--env", ENV)
    assert health.returncode == 0, health.stdout


def test_zz_no_secret_in_any_output_or_remote_file_but_the_env_files(remote: Remote) -> None:
    secrets = [v for k, v in strong_secrets().items() if k.startswith("STAGING_")]
    for text in remote.outputs:
        for secret in secrets:
            assert secret not in text
    holders = []
    for path in [*remote.remote_dir.rglob("*"), *remote.roots[0].rglob("*"), *remote.roots[1].rglob("*")]:
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if any(s.encode() in data for s in secrets):
                holders.append(path)
    assert holders, "the env files must hold the secrets"
    for path in holders:
        # the units' secret files: env/*.env, and Redis's configuration env/redis.conf
        assert path.is_relative_to(remote.remote_dir) and path.parent.name == "env", path
        assert path.stat().st_mode & 0o777 == 0o600, path
    # ps on the host never shows them either (they travel on stdin, not argv).
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert not any(s in ps for s in secrets)


def test_zzz_down_stops_the_stack_on_the_host(remote: Remote) -> None:
    down = remote.cli("down", "--env", ENV, root=1)
    assert down.returncode == 0 and down.stdout.strip() == f"{ENV}: stopped", down.stderr
    status = json.loads(remote.cli("status", "--env", ENV, "--json").stdout)
    assert status and {r["state"] for r in status} == {"STOPPED"}
    assert not (remote.remote_dir / "state" / "migrated").exists()
    again = remote.cli("down", "--env", ENV)
    assert again.returncode == 0 and again.stdout.strip() == f"{ENV}: nothing was running"
