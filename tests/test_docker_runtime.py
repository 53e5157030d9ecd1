"""The docker runtime on a real Docker Engine: a staging-like environment from locally built images.

Needs a running engine and the stand-in images (images/build.sh); .ci/run provides both and sets
MFE_REQUIRE_DOCKER=1 so that these tests fail rather than skip there.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from mfe_deploy.backups import pg
from mfe_deploy.config import loader
from mfe_deploy.console import Console
from mfe_deploy.exec.host import local as local_host
from mfe_deploy.runtimes import registry
from mfe_deploy.runtimes.contract import Deployment
from tests import backup_suite as suite
from tests.conftest import REPO, strong_secrets
from tests.engines import remove_images, require_engine_with_standins
from tests.pg import free_port
from tests.receiver import Receiver, receiver
from tests.servers import S3, s3_server
from tests.stack import admin_headers, maintenance_round_trip, poll
from tests.test_services_e2e import _profile, _user

ENV = "dkt"
require_engine_with_standins()


@dataclass
class Project:
    root: Path
    https: int
    http: int
    environ: dict[str, str]
    env: str = ENV
    prometheus: int = 0

    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mfe_deploy", "-C", str(self.root), *args],
            capture_output=True,
            text=True,
            env=self.environ,
            timeout=timeout,
            check=False,
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "mfe_deploy", "-C", str(self.root), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.environ,
        )

    def gateway(self) -> httpx.Client:
        return httpx.Client(base_url=f"https://localhost:{self.https}", verify=False, timeout=15)

    def psql(self, database: str, sql: str) -> str:
        """As the superuser inside the postgres container (its socket trusts local users)."""
        name = next(n for n in self.containers() if "-postgres-" in n)
        done = subprocess.run(
            [
                "docker",
                "exec",
                name,
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
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def places(self) -> dict[str, tuple[str, str]]:
        return {s: (f"{s}_db", "public") for s in ("auth", "payments", "admin", "profile")}

    def containers(self) -> dict[str, str]:
        out = subprocess.run(
            [
                "docker",
                "ps",
                "--filter",
                f"label=com.docker.compose.project=universal-mfe-{ENV}",
                "--format",
                "{{.ID}} {{.Names}}",
            ],
            capture_output=True,
            text=True,
        ).stdout
        return dict(reversed(line.split()) for line in out.splitlines())  # type: ignore[misc]


@pytest.fixture(scope="module")
def hooks() -> Iterator[Receiver]:
    with receiver() as got:
        yield got


@pytest.fixture(scope="module")
def s3() -> Iterator[S3]:
    with s3_server("dkr-backups") as server:
        yield server


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, hooks: Receiver, s3: S3) -> Iterator[Project]:
    root = tmp_path_factory.mktemp("docker") / "project"
    shutil.copytree(REPO / "environments", root / "environments")
    remove_images("mfe-test")  # the tags are fixed (v1, v2...): an image left by an older checkout is not this code
    http, https, prometheus = free_port(), free_port(), free_port()
    (root / "environments" / f"{ENV}.yaml").write_text(f"""\
extends: staging
runtime: docker
services:
  api-gateway:
    replicas: 2
nginx:
  domain: localhost
  http_port: {http}
  https_port: {https}
images:
  postgres: mfe-local/postgres:15
  redis: mfe-local/redis:7
  rabbitmq: mfe-local/rabbitmq:3
  nginx: mfe-local/nginx:1.22
  service_base: mfe-local/python:3.11
  services_prefix: mfe-test
  prometheus: mfe-local/prometheus:2
monitoring:
  enabled: true
  port: {prometheus}
  scrape_interval: 1s
logs: {{max_size: 1m, max_files: 2}}
database:
  tls: true
notify:
  webhooks:
    - url: ${{DKR_NOTIFY_URL}}
      events: [deploy.failed, rollback.automatic, job.failed]
backup:
  offsite:
    endpoint: {s3.endpoint}
    bucket: dkr-backups
    access_key_id: ${{DKR_S3_KEY}}
    secret_access_key: ${{DKR_S3_SECRET}}
""")
    environ = {**os.environ, **strong_secrets(), "DKR_NOTIFY_URL": hooks.url("/hook")}
    environ |= {"DKR_S3_KEY": s3.access_key, "DKR_S3_SECRET": s3.secret_key}
    p = Project(root, https, http, environ, prometheus=prometheus)
    up = p.cli("up", "--env", ENV, "--version", "v1")
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        yield p
    finally:
        p.cli("down", "--env", ENV, "--volumes", "--yes")


def test_user_flow_through_nginx_over_https(project: Project) -> None:
    with project.gateway() as gw:
        user_id, auth = _user(gw)
        assert poll(lambda: _profile(gw, auth), timeout=20) is not None
        key = {"Idempotency-Key": "dk-1"}
        assert (
            gw.post("/api/payments", json={"amount": 42, "currency": "EUR"}, headers={**auth, **key}).status_code == 201
        )
        admin = admin_headers(gw, project.cli, ENV)

        def both() -> bool:
            r = gw.get("/api/admin/events", params={"limit": 500}, headers=admin)
            types = {e["type"] for e in r.json()["events"] if e["data"].get("user_id") == user_id}
            return {"user.registered", "payment.created"} <= types

        assert poll(both, timeout=20)
        assert gw.get("/health").json()["status"] == "healthy"


def test_prometheus_scrapes_every_replica_and_metrics_stay_off_nginx(project: Project) -> None:
    def query(promql: str) -> float:
        url = f"http://127.0.0.1:{project.prometheus}/api/v1/query"
        result = httpx.get(url, params={"query": promql}, timeout=5).json()["data"]["result"]
        return float(result[0]["value"][1]) if result else 0.0

    def targets() -> str:
        """What Prometheus scrapes and what `up` says of each series now (for a failure's message)."""
        url = f"http://127.0.0.1:{project.prometheus}/api/v1/targets"
        active = httpx.get(url, timeout=5).json()["data"]["activeTargets"]
        scraped = sorted((t["labels"]["job"], t["labels"]["instance"], t["health"], t["lastError"]) for t in active)
        url = f"http://127.0.0.1:{project.prometheus}/api/v1/query"
        result = httpx.get(url, params={"query": "up"}, timeout=5).json()["data"]["result"]
        series = sorted((r["metric"].get("job"), r["metric"].get("instance"), r["value"][1]) for r in result)
        return f"targets {scraped}; up {series}"

    def scraped() -> dict[str, list[str]]:
        """`up` of every target Prometheus scrapes now, by job: each replica of a service is a target of its own.
        A series of an address no target has any more (a container recreated at another address, CI saw
        admin's and payments' swapped) stays in `up` until Prometheus's lookback ends: not a replica, not
        counted; a target without a value counts as "missing"."""
        base = f"http://127.0.0.1:{project.prometheus}/api/v1"
        active = httpx.get(f"{base}/targets", timeout=5).json()["data"]["activeTargets"]
        result = httpx.get(f"{base}/query", params={"query": "up"}, timeout=5).json()["data"]["result"]
        values = {(r["metric"].get("job"), r["metric"].get("instance")): r["value"][1] for r in result}
        found: dict[str, list[str]] = {}
        for t in active:
            job, instance = t["labels"]["job"], t["labels"]["instance"]
            found.setdefault(job, []).append(values.get((job, instance), "missing"))
        return {job: sorted(v) for job, v in sorted(found.items())}

    every = {"admin": ["1"], "api-gateway": ["1", "1"], "auth": ["1"], "payments": ["1"], "profile": ["1"]}

    def all_up() -> bool:  # both gateway replicas and every service, each scraped, and no other target
        return scraped() == every

    assert poll(all_up, timeout=60), targets()
    served = 'sum(mfe_http_requests_total{job="auth", route="/api/auth/version", status="200"})'
    before = query(served)
    with project.gateway() as gw:
        for _ in range(11):
            assert gw.get("/api/auth/version").status_code == 200
        assert gw.get("/metrics").status_code == 404  # nginx forwards /api/ and /health only
    assert poll(lambda: query(served) - before == 11, timeout=30), query(served) - before


def test_maintenance_mode_through_nginx(project: Project) -> None:
    with project.gateway() as gw:
        maintenance_round_trip(gw, project.cli, ENV)


def test_health_is_green(project: Project) -> None:
    checked = project.cli("health", "--env", ENV, "--json")
    assert checked.returncode == 0, checked.stderr
    body = json.loads(checked.stdout)
    assert {name: v["status"] for name, v in body.items()} == dict.fromkeys(
        ("api-gateway", "auth", "payments", "admin", "profile"), 200
    )
    assert body["auth"]["body"]["services"] == {"database": "healthy", "redis": "healthy", "rabbitmq": "healthy"}


def test_http_redirects_and_rate_limit_answers_429(project: Project) -> None:
    redirect = httpx.get(f"http://localhost:{project.http}/api/x", follow_redirects=False)
    assert (redirect.status_code, redirect.headers["location"]) == (308, f"https://localhost:{project.https}/api/x")
    with project.gateway() as gw:
        started = time.monotonic()
        answers = [gw.get("/api/auth/version") for _ in range(40)]
        refills = int((time.monotonic() - started) / 0.6) + 1  # 100r/m frees one slot every 0.6 s
    statuses = [a.status_code for a in answers]
    assert 429 in statuses
    assert statuses.count(200) <= 21 + refills  # burst 20 (+1), and what refilled during the loop
    refused = answers[statuses.index(429)]
    assert (refused.json(), refused.headers["retry-after"]) == ({"error": "too many requests"}, "1")


def _handshake(port: int, version: ssl.TLSVersion) -> str:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = version
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    try:
        # Our name in the hello (SNI): nginx refuses a handshake for any other, or for none.
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname="localhost") as s,
        ):
            return str(s.version())
    except (ssl.SSLError, OSError):
        return "refused"


def test_only_tls_12_and_13(project: Project, tmp_path: Path) -> None:
    # Control: this client can speak TLS 1.1, shown against a server that accepts it.
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=x",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        server_ctx.minimum_version = ssl.TLSVersion.TLSv1
    server_ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    server_ctx.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True):
                pass
        except (ssl.SSLError, OSError):
            pass

    threading.Thread(target=serve, daemon=True).start()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert _handshake(listener.getsockname()[1], ssl.TLSVersion.TLSv1_1) == "TLSv1.1"
        assert _handshake(project.https, ssl.TLSVersion.TLSv1) == "refused"
        assert _handshake(project.https, ssl.TLSVersion.TLSv1_1) == "refused"
        assert _handshake(project.https, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
        assert _handshake(project.https, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
    listener.close()


def _inspect(name: str) -> dict[str, Any]:
    out = subprocess.run(["docker", "inspect", name], capture_output=True, text=True, check=True).stdout
    data: dict[str, Any] = json.loads(out)[0]
    return data


def _processes(name: str, values: list[str]) -> list[dict[str, Any]]:
    """Every process of a container, read from this host's /proc (the container's root may not read a
    process of another user): its pid inside the container, ids, capabilities, no_new_privs, and how many
    of `values` its initial environment (what /proc/PID/environ shows) holds."""
    top = subprocess.run(["docker", "top", name, "-eo", "pid"], capture_output=True, text=True, check=True)
    found = []
    for pid in top.stdout.split()[1:]:
        proc = Path("/proc") / pid
        try:
            status = dict(line.split(":", 1) for line in (proc / "status").read_text().splitlines() if ":" in line)
            environ = (proc / "environ").read_bytes()
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue  # gone meanwhile
        found.append(
            {
                "pid": int(status["NSpid"].split()[-1]),
                "host_pid": int(pid),
                "ppid": int(status["PPid"]),
                "cmd": cmd,
                "uid": status["Uid"].split(),
                "caps": [status["CapEff"].strip(), status["CapPrm"].strip()],
                "nnp": status["NoNewPrivs"].strip(),
                "leaks": sum(v.encode() in environ for v in values),
            }
        )
    return found


def test_a_service_writing_logs_fast_for_a_minute_keeps_them_under_the_bound(project: Project) -> None:
    """Issue 32: compose set no `logging`, and a busy gateway's access lines grew without end on the disk
    it shares with PostgreSQL. Every container of the stack has the bound (logs: 1m x 2 here); then a
    container of a service's image with that same log configuration writes 500 kB a second for a minute,
    15 times the bound, and its log files stay within it. (A container of its own: a service whose output
    pipe is flooded blocks on it, and the stack's later tests need it healthy.)"""
    names = project.containers()
    for name in names:
        config = _inspect(name)["HostConfig"]["LogConfig"]
        assert config == {"Type": "json-file", "Config": {"max-size": "1m", "max-file": "2"}}, (name, config)
    profile = next(n for n in names if "-profile-" in n)
    image, config = _inspect(profile)["Config"]["Image"], _inspect(profile)["HostConfig"]["LogConfig"]
    options = [x for key, value in config["Config"].items() for x in ("--log-opt", f"{key}={value}")]
    # Lines of 4 kB: the engine's work is per line, and the suite's other groups share these two cores.
    flood = f"i=0; while [ $i -lt 60 ]; do yes {'x' * 4000} | head -c 500000; sleep 1; i=$((i+1)); done"
    argv = ["docker", "run", "-d", "--name", "mfe-test-log-flood", "--log-driver", config["Type"], *options]
    argv += ["--entrypoint", "sh", "--user", "10001:10001", image, "-c", flood]
    try:
        started = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert started.returncode == 0, started.stderr
        waited = subprocess.run(["docker", "wait", "mfe-test-log-flood"], capture_output=True, text=True, timeout=180)
        assert waited.stdout.strip() == "0", waited.stdout + waited.stderr  # the flood's own exit code
        folder = Path(_inspect("mfe-test-log-flood")["LogPath"]).parent
        files = {f.name: f.stat().st_size for f in folder.glob("*-json.log*")}
    finally:
        subprocess.run(["docker", "rm", "-f", "mfe-test-log-flood"], capture_output=True, check=False)
    assert 1 <= len(files) <= 2 and sum(files.values()) <= 2 * (1 << 20) + 64 * 1024, files


def test_services_run_unprivileged_and_stores_are_not_published(project: Project) -> None:
    """A bundled service's container starts as root with CAP_SETUID, CAP_SETGID and CAP_DAC_READ_SEARCH only
    (to read its env file), and CAP_KILL for its init to forward docker's SIGTERM to the service, which runs as
    10001 with no capability and no way to gain one."""
    containers = project.containers()
    services = [
        n for n in containers if any(f"-{s}-" in n for s in ("api-gateway", "auth", "payments", "admin", "profile"))
    ]
    assert len(services) == 6  # two gateway replicas
    for name in services:
        info = _inspect(name)
        assert "no-new-privileges:true" in info["HostConfig"]["SecurityOpt"], name
        assert info["HostConfig"]["CapDrop"] == ["ALL"], name
        assert sorted(info["HostConfig"]["CapAdd"]) == ["CAP_DAC_READ_SEARCH", "CAP_KILL", "CAP_SETGID", "CAP_SETUID"]
        processes = _processes(name, [])
        # PID 1 is docker-init (init: true), the container's user; the service is its child.
        assert [p["cmd"].split()[0] for p in processes if p["pid"] == 1] == ["/sbin/docker-init"], processes
        (service,) = [p for p in processes if "mfe-service" in p["cmd"] and p["pid"] != 1]
        assert service["uid"] == ["10001"] * 4, (name, service)
        assert service["caps"] == ["0000000000000000"] * 2, (name, service)
        assert service["nnp"] == "1", (name, service)
    for name in containers:
        if any(f"-{s}-" in name for s in ("postgres", "redis", "rabbitmq")):
            ports = _inspect(name)["NetworkSettings"]["Ports"] or {}
            assert all(not bindings for bindings in ports.values()), f"{name} publishes {ports}"


def test_a_service_reads_an_env_file_that_is_not_roots(project: Project) -> None:
    """The CLI's user need not be root (a developer in the docker group): the env file is theirs, mode
    0600, and the service still reads it at start."""
    env_file = project.root / ".mfe" / ENV / "env" / "profile.env"
    (container,) = [n for n in project.containers() if "-profile-" in n]
    os.chown(env_file, 4242, 4242)
    try:
        subprocess.run(["docker", "restart", container], capture_output=True, check=True, timeout=120)
        assert poll(lambda: _inspect(container)["State"].get("Health", {}).get("Status") == "healthy", 60, 1.0)
    finally:
        os.chown(env_file, os.getuid(), os.getgid())


def test_no_secret_in_any_containers_inspect_or_environment(project: Project, s3: S3) -> None:
    """Every secret value (the JWT key, the database, RabbitMQ and superuser passwords, the offsite
    store's credentials): 0 times in `docker inspect` of every container, and in the initial environment
    of every process in it."""
    values = [v for k, v in strong_secrets().items() if "SENTRY" not in k] + [s3.access_key, s3.secret_key]
    containers = project.containers()
    assert len(containers) >= 10, containers
    found = []
    for name in containers:
        inspect = json.dumps(_inspect(name))
        found += [f"{name}: docker inspect" for v in values if v in inspect]
        found += [f"{name}: {p['cmd'][:40]}" for p in _processes(name, values) if p["leaks"]]
    assert found == []
    # The values are there, in the files only root reads: the services did get them.
    env_files = list((project.root / ".mfe" / ENV / "env").glob("*.env"))
    assert env_files and all(f.stat().st_mode & 0o777 == 0o600 for f in env_files)


def test_database_traffic_is_tls_verified_and_plain_tcp_is_refused(project: Project) -> None:
    """database.tls (this module's stack runs on it: every other test here, migrations, backups and restores
    included, goes over it): a service connects with verify-full against the stack's CA and its connection is
    TLS; the same role and password over plain TCP are refused; every service's connection is TLS."""
    code = (
        "import os, psycopg\n"
        "url = os.environ['DATABASE_URL']\n"
        "with psycopg.connect(url) as c:\n"
        "    print(c.execute('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()').fetchone()[0])\n"
        "try:\n"
        "    psycopg.connect(url.split('?')[0] + '?sslmode=disable').close()\n"
        "    print('plain accepted')\n"
        "except psycopg.OperationalError as e:\n"
        "    print('plain refused' if 'no encryption' in str(e) else str(e))\n"
    )
    done = project.cli("run", "auth", "--env", ENV, "--", "python3", "-c", code)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split("\n")[:2] == ["True", "plain refused"], done.stdout
    env_file = next(project.root.glob(f".mfe/{ENV}/**/env/auth.env"))
    assert "sslmode=verify-full&sslrootcert=/etc/mfe/db-ca.pem" in env_file.read_text()
    sql = (
        "SELECT count(*) FILTER (WHERE NOT s.ssl), count(DISTINCT a.usename) FROM pg_stat_ssl s "
        "JOIN pg_stat_activity a USING (pid) WHERE a.usename LIKE '%\\_app'"
    )
    plain, roles = project.psql("postgres", sql).strip().split("|")
    assert (plain, roles) == ("0", "4"), (plain, roles)  # the four services' roles, all over TLS
    key = next(project.root.glob(f".mfe/{ENV}/**/db-tls/server.key"))
    assert key.stat().st_mode & 0o777 == 0o600


def test_redis_answers_only_with_its_password(project: Project) -> None:
    """Staging's Redis asks for a password: its users are in its configuration, read on its standard input.
    The default user is off, the operator's user has redis_password, and each service has its own user: auth's
    gets NOPERM on profile's keys. The services, each with its own user in its REDIS_URL, are healthy."""
    name = next(n for n in project.containers() if "-redis-" in n)

    def cli(*args: str, env: tuple[str, ...] = ()) -> str:
        argv = ["docker", "exec", *env, name, "redis-cli", "--no-auth-warning", *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        return (done.stdout + done.stderr).strip()

    master = strong_secrets()["STAGING_REDIS_PASSWORD"]
    assert cli("ping").startswith("NOAUTH")
    wrong = cli("ping", env=("-e", "REDISCLI_AUTH=not-the-password"))
    assert "WRONGPASS" in wrong and "PONG" not in wrong, wrong
    assert "WRONGPASS" in cli("ping", env=("-e", f"REDISCLI_AUTH={master}"))  # the default user is off
    operator = ("-e", f"REDISCLI_AUTH={master}")
    assert cli("--user", "mfe.operator", "set", "profile:probe", "x", env=operator) == "OK"
    env_file = next(project.root.glob(f".mfe/{ENV}/**/env/auth.env"))
    auth_url = next(line for line in env_file.read_text().splitlines() if line.startswith("REDIS_URL="))
    auth_password = urlsplit(auth_url.split("=", 1)[1].strip("'")).password
    assert auth_password and auth_password != master
    as_auth = ("-e", f"REDISCLI_AUTH={auth_password}")
    assert cli("--user", "auth", "set", "auth:probe", "y", env=as_auth) == "OK"
    assert cli("--user", "auth", "get", "profile:probe", env=as_auth).startswith("NOPERM")
    assert cli("--user", "auth", "flushall", env=as_auth).startswith("NOPERM")
    assert cli("--user", "mfe.operator", "del", "profile:probe", "auth:probe", env=operator) == "2"
    assert project.cli("health", "--env", ENV).returncode == 0


def test_infra_containers_have_read_only_roots(project: Project) -> None:
    """postgres, redis, rabbitmq and nginx write only to their volumes and in-memory folders (rabbitmq's
    configuration goes into a tmpfs conf.d); the services were read-only already."""
    seen = set()
    for name in project.containers():
        kind = next((s for s in ("postgres", "redis", "nginx", "rabbitmq") if f"-{s}-" in name), None)
        if kind is None:
            continue
        seen.add(kind)
        assert _inspect(name)["HostConfig"]["ReadonlyRootfs"] is True, name
        probe = subprocess.run(["docker", "exec", name, "touch", "/usr/probe"], capture_output=True, text=True)
        assert probe.returncode != 0 and "Read-only file system" in probe.stderr, (name, probe.stderr)
    assert seen == {"postgres", "redis", "nginx", "rabbitmq"}
    # The administrator's password is in the broker's own file only (its environment: the test above).
    rabbitmq = next(n for n in project.containers() if "-rabbitmq-" in n)
    conf = ["docker", "exec", rabbitmq, "stat", "-c", "%a %U", "/etc/rabbitmq/conf.d/90-mfe.conf"]
    assert subprocess.run(conf, capture_output=True, text=True, check=True).stdout.split() == ["600", "rabbitmq"]


def test_nginx_runs_unprivileged_and_reloads(project: Project) -> None:
    """nginx's master and workers run as 101 with no capability (root only copied the certificate and key
    for them); a reload (tested, then signalled, as that user) keeps the master and the service."""
    from mfe_deploy.compose import nginx_reload

    nginx = next(n for n in project.containers() if "-nginx-" in n)
    processes = _processes(nginx, [])
    # nginx's processes are its master (the container's pid 1) and the master's children. The engine's
    # healthcheck, exec'd beside them every few seconds, is a child of the runtime and may be caught at any
    # stage of its start (runc init, the shell): it is not nginx's and is left out.
    master = next(p for p in processes if p["pid"] == 1)
    nginx_own = [p for p in processes if p is master or p["ppid"] == master["host_pid"]]
    assert len(nginx_own) >= 2 and {p["cmd"].split()[0] for p in nginx_own} == {"nginx:"}, processes
    for process in nginx_own:
        assert process["uid"] == ["101"] * 4 and process["nnp"] == "1", process
        assert process["caps"] == ["0000000000000000"] * 2, process
    copy = ["docker", "exec", nginx, "stat", "-c", "%a %u", "/run/nginx/ssl/key.pem"]
    assert subprocess.run(copy, capture_output=True, text=True, check=True).stdout.split() == ["600", "101"]
    for step in nginx_reload(nginx):
        done = subprocess.run(step.argv, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, (step.argv, done.stderr)
    assert any(p["host_pid"] == master["host_pid"] for p in _processes(nginx, []))
    with project.gateway() as gw:
        assert gw.get("/health").status_code == 200


def test_a_command_failing_in_a_container_is_seen_failing(project: Project) -> None:
    """`compose exec` exits 0 whatever the command did (compose 2.40, Docker 20.10): a failed pg_dump or a
    refused nginx configuration would pass unseen. The runtime's in-container commands carry their own code."""
    loaded = loader.load(project.root, ENV)
    deployment = Deployment(
        project.root,
        loaded,
        Console(io.StringIO(), io.StringIO()),
        local_host(project.root, ENV),
        lambda: loader.load_with_secrets(project.root, ENV, project.environ)[1],
    )
    rt = registry.create("docker", deployment)
    ok = rt.runner.run(pg.sql(rt.postgres(), "postgres", "SELECT 40 + 2"), timeout=60)
    assert (ok.returncode, ok.stdout.strip()) == (0, "42"), ok.stderr
    bad = rt.runner.run(pg.sql(rt.postgres(), "postgres", "SELECT * FROM no_such_table"), timeout=60)
    assert bad.returncode != 0 and "no_such_table" in bad.stderr
    dump = rt.runner.run(pg.dump_version(rt.postgres()), timeout=60)
    assert dump.returncode == 0 and "pg_dump" in dump.stdout
    missing = rt.runner.run(pg.sql(rt.postgres(), "no_such_database", "SELECT 1"), timeout=60)
    assert missing.returncode != 0 and "no_such_database" in missing.stderr
    assert {name: probe.status for name, probe in rt.health().items()} == dict.fromkeys(loaded.env.services, 200)


def test_second_up_recreates_nothing(project: Project) -> None:
    before = project.containers()
    again = project.cli("up", "--env", ENV, "--version", "v1")
    assert again.returncode == 0, again.stderr
    assert project.containers() == before


def test_a_store_whose_configuration_changed_restarts_only_with_restart_stores(
    project: Project, hooks: Receiver
) -> None:
    """redis gets a memory limit: `plan` names the restart, `up` refuses it (a failed deploy, notified) and
    changes nothing, `up --restart-stores` recreates redis alone, with the new setting, and the stack is
    healthy on it."""
    env_file = project.root / "environments" / f"{ENV}.yaml"
    env_file.write_text(env_file.read_text() + "redis:\n  maxmemory: 64m\n")
    before = project.containers()
    planned = project.cli("plan", "--env", ENV, "--version", "v1")
    assert planned.returncode == 1 and "redis" in planned.stdout and "--restart-stores" in planned.stdout, (
        planned.stdout
    )
    refused = project.cli("up", "--env", ENV, "--version", "v1")
    said = " ".join(refused.stderr.split())
    assert refused.returncode == 1 and "configuration of redis changed" in said and "Nothing was changed" in said, said
    assert project.containers() == before
    (posted,) = hooks.wait(1)
    event = json.loads(posted.body)
    assert event["event"] == "deploy.failed" and "redis" in event["summary"], event
    hooks.posts.clear()  # the automatic rollback's test counts its own
    applied = project.cli("up", "--env", ENV, "--version", "v1", "--restart-stores")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    after = project.containers()
    changed = {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)}
    assert {name.split("-")[-2] for name in changed} == {"redis"}, changed
    (redis,) = [name for name in after if "-redis-" in name]
    assert "64m" in _inspect(redis)["Config"]["Cmd"], _inspect(redis)["Config"]["Cmd"]
    checked = project.cli("health", "--env", ENV)  # the services' pooled connections point at the old redis
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert project.cli("plan", "--env", ENV, "--version", "v1").returncode == 0


def _said_plan(output: str) -> tuple[list[tuple[str, str, str]], list[str], list[str]]:
    """What `up` printed: its plan's steps, then the steps it said it started and ended."""
    lines = output.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("plan for "))
    steps = []
    for line in lines[head + 1 :]:
        if not line.startswith("  "):
            break
        action, _, rest = line.strip().partition(" ")
        target, _, reason = rest.partition(": ")
        steps.append((action, target, reason))
    started = [line.removeprefix("start: ") for line in lines if line.startswith("start: ")]
    ended = [line.removeprefix("done: ").rsplit(" (", 1)[0] for line in lines if line.startswith("done: ")]
    return steps, started, ended


def test_zz_rollback_and_automatic_rollback(project: Project, hooks: Receiver) -> None:
    # `up` runs the plan that `plan` shows: the same steps, each said as it starts and ends.
    planned = project.cli("plan", "--env", ENV, "--version", "v2", "--json")
    steps = [(s["action"], s["target"], s["reason"]) for s in json.loads(planned.stdout)["steps"]]
    assert ("replace", "api-gateway", "image mfe-test/api-gateway:v1 -> mfe-test/api-gateway:v2") in steps, steps
    v2 = project.cli("up", "--env", ENV, "--version", "v2")
    assert v2.returncode == 0, v2.stdout + v2.stderr
    said, started, ended = _said_plan(v2.stderr)
    assert said == steps, (said, steps)
    assert started == ended == [f"{action} {target}" for action, target, _ in steps]
    back = project.cli("rollback", "api-gateway", "--env", ENV)
    assert back.returncode == 0, back.stderr
    assert back.stdout.startswith("api-gateway: now v1 (release ")
    status = json.loads(project.cli("status", "--env", ENV, "--json").stdout)
    assert {r["version"] for r in status if r["name"] == "api-gateway"} == {"v1"}
    assert {r["health"] for r in status if r["name"] == "api-gateway"} == {"healthy"}
    with project.gateway() as gw:
        assert gw.get("/health").status_code == 200  # nginx follows the new replicas
    forward = project.cli("rollback", "api-gateway", "--env", ENV, "--to", "v2", "--json")
    assert forward.returncode == 0, forward.stderr
    said = json.loads(forward.stdout)  # stdout is the JSON alone: progress went to stderr
    assert (said["env"], said["service"], said["version"], said["versions"]["auth"]) == (ENV, "api-gateway", "v2", "v2")
    missing = project.cli("rollback", "api-gateway", "--env", ENV, "--to", "v9")
    assert missing.returncode == 1 and "mfe-test/api-gateway:v9 does not exist" in missing.stderr

    # v3 of the gateway exits at start: the deploy fails, rolls back by itself, and says so.
    script = 'RUN printf "#!/bin/sh\\necho broken v3\\nexit 3\\n" > /opt/mfe/bin/mfe-service'
    broken = subprocess.run(
        ["docker", "build", "-q", "-t", "mfe-test/api-gateway:v3", "-"],
        text=True,
        check=True,
        input=f"FROM mfe-test/api-gateway:v1\nUSER 0\n{script}\nUSER 10001:10001\n",
        capture_output=True,
    )
    assert broken.returncode == 0
    v3 = project.cli("up", "--env", ENV, "--version", "v3", "--timeout", "90")
    assert v3.returncode == 1
    assert "did not become healthy and was rolled back to release" in v3.stderr
    status = json.loads(project.cli("status", "--env", ENV, "--json").stdout)
    assert {r["version"] for r in status if r["name"] == "api-gateway"} == {"v2"}
    releases = json.loads(project.cli("releases", "--env", ENV, "--json").stdout)
    kinds = [(r["kind"], r["outcome"], r["versions"]["api-gateway"]) for r in releases]
    assert kinds[-5:] == [
        ("up", "succeeded", "v2"),
        ("rollback", "succeeded", "v1"),
        ("rollback", "succeeded", "v2"),
        ("up", "failed", "v3"),
        ("auto-rollback", "succeeded", "v2"),
    ]
    history = project.cli("history", "--env", ENV, "--json")
    actions = [(h["action"], h["result"]) for h in json.loads(history.stdout)]
    assert ("up", "failed") in actions and ("rollback", "ok") in actions
    # The webhook heard of the failed deploy and of the automatic rollback (and of nothing else it did not ask for).
    events = [json.loads(post.body) for post in hooks.wait(2)]
    assert sorted(e["event"] for e in events) == ["deploy.failed", "rollback.automatic"]
    assert all(e["details"]["version"] == "v3" and "rolled back to release" in e["summary"] for e in events)


def test_concurrent_up_is_refused_naming_the_holder(project: Project) -> None:
    first = project.popen("up", "--env", ENV, "--version", "v1")
    lock = project.root / ".mfe" / ENV / "state" / "deploy.lock"
    assert poll(lock.exists, timeout=20, interval=0.05)
    started = time.monotonic()
    second = project.cli("up", "--env", ENV, "--version", "v1")
    assert time.monotonic() - started < 2 + 1.5  # refused within 2 s of asking (plus interpreter start)
    assert second.returncode == 3
    assert second.stderr.startswith("error: the environment is locked by ")
    assert f"pid {first.pid} running `mfe-deploy -C {project.root} up --env {ENV} --version v1`" in second.stderr
    first.send_signal(signal.SIGKILL)
    first.communicate()
    stale = project.cli("lock", "status", "--env", ENV)
    assert "stale (that process is gone)" in stale.stdout
    refused = project.cli("up", "--env", ENV, "--version", "v1")
    assert refused.returncode == 3 and "stale deploy lock" in refused.stderr
    healed = project.cli("up", "--env", ENV, "--version", "v1", "--force-unlock")
    assert healed.returncode == 0, healed.stderr


def test_zzz_prune_keeps_the_newest_and_what_releases_use(project: Project) -> None:
    run = uuid.uuid4().hex  # new images each run: a cached build would keep an old creation time
    for n in range(1, 7):  # six newer versions of the gateway image, distinct and created in order
        subprocess.run(["docker", "image", "rm", f"mfe-test/api-gateway:p{n}"], capture_output=True)
        subprocess.run(
            ["docker", "build", "-q", "-t", f"mfe-test/api-gateway:p{n}", "-"],
            check=True,
            text=True,
            input=f"FROM mfe-test/api-gateway:v1\nLABEL prune.test={n}-{run}\n",
            capture_output=True,
        )
        time.sleep(1.1)  # image creation times have one-second resolution
    pruned = project.cli("images", "prune", "--env", ENV, "--keep", "5", "--json")
    assert pruned.returncode == 0, pruned.stderr
    removed = set(json.loads(pruned.stdout)["removed"])
    # Newest five kept (p6..p2); of the older ones v1 and v2 are used by recorded releases, v3 only failed.
    assert removed == {"mfe-test/api-gateway:p1", "mfe-test/api-gateway:v3"}
    left = subprocess.run(
        ["docker", "image", "ls", "--format", "{{.Tag}}", "mfe-test/api-gateway"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert sorted(left) == ["p2", "p3", "p4", "p5", "p6", "v1", "v2"]


# --- backups on the docker runtime: pg_dump and pg_restore run inside the postgres container ---------------
def test_backup_round_trip_through_the_api(project: Project) -> None:
    suite.round_trip(project)


def test_run_exec_and_db_shell_in_the_services_containers(project: Project) -> None:
    """The command gets the service's variables (sourced inside the container from its mounted env file),
    runs as the service's user, and its output and exit code are the command's; db shell is psql as the
    service's own role. No argv holds a secret: the host's docker exec line is fixed text."""
    code = "import os, sys; print(os.getuid()); print(os.environ['DATABASE_URL'].rsplit('@', 1)[1]); sys.exit(4)"
    for verb in ("run", "exec"):
        done = project.cli(verb, "auth", "--env", ENV, "--", "python3", "-c", code)
        assert done.returncode == 4, done.stdout + done.stderr
        uid, address = done.stdout.split()[:2]
        assert (uid, address.split("?")[0]) == ("10001", "postgres:5432/auth_db"), done.stdout
    shell = project.cli("db", "shell", "auth", "--env", ENV, "--", "-At", "-c", "SELECT current_user")
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout.strip() == "auth_app"
    failing = project.cli("db", "shell", "auth", "--env", ENV, "--", "-c", "SELECT * FROM no_such_table")
    assert failing.returncode == 1 and "no_such_table" in failing.stderr


def test_jobs_run_in_the_services_container_and_a_failure_and_a_timeout_each_notify_once(
    project: Project, hooks: Receiver
) -> None:
    """jobs: on docker: a run is a one-off in the service's container with its variables, as its user, under
    coreutils' timeout there (the process inside is stopped, not only the docker client); a job exiting 3 and
    one past its timeout each send exactly one job.failed, and the history has every outcome."""
    env_file = project.root / "environments" / f"{ENV}.yaml"
    before = env_file.read_text()
    env_file.write_text(
        before
        + """jobs:
  whoami:
    service: payments
    command: [python3, -c, "import os; print(os.getuid(), os.environ['SERVICE_NAME'])"]
    schedule: "0 3 * * *"
  boom:
    service: auth
    command: [python3, -c, "raise SystemExit(3)"]
    schedule: "0 3 * * *"
  slow:
    service: auth
    command: sleep 40
    schedule: "0 3 * * *"
    timeout: 2s
"""
    )
    hooks.posts.clear()
    try:
        ran = project.cli("jobs", "run", "whoami", "--env", ENV)
        assert ran.returncode == 0 and ran.stdout.split() == ["10001", "payments"], ran.stdout + ran.stderr
        assert project.cli("jobs", "run", "boom", "--env", ENV).returncode == 3
        started = time.monotonic()
        slow = project.cli("jobs", "run", "slow", "--env", ENV)
        assert slow.returncode == 124 and time.monotonic() - started < 20, slow.stderr
        (auth,) = [name for name in project.containers() if "-auth-" in name]
        processes = subprocess.run(["docker", "top", auth], capture_output=True, text=True, check=True).stdout
        assert "sleep 40" not in processes, processes  # stopped in the container, not left behind
        events = [json.loads(post.body) for post in hooks.wait(2)]
        time.sleep(1)  # and no third
        assert len(hooks.posts) == 2
        assert sorted((e["event"], e["details"]["job"], e["details"]["outcome"]) for e in events) == [
            ("job.failed", "boom", "failed"),
            ("job.failed", "slow", "timed out"),
        ], events
        history = json.loads(project.cli("jobs", "history", "--env", ENV, "--json").stdout)
        assert [(h["job"], h["outcome"], h["exit_code"]) for h in history[-3:]] == [
            ("whoami", "succeeded", 0),
            ("boom", "failed", 3),
            ("slow", "timed out", 124),
        ]
    finally:
        env_file.write_text(before)
        hooks.posts.clear()


def test_every_backup_goes_offsite_and_restores_from_there_alone(project: Project, s3: S3) -> None:
    """backup.offsite on the docker runtime: the dumps streamed out of the postgres container go up as the
    backup completes; with the local copy gone, `restore --from offsite` brings every row back."""
    suite.make_data(project)
    before = suite.fingerprint(project)
    backup_id = suite.new_backup(project)
    manifest = json.loads((suite.folder(project) / backup_id / "manifest.json").read_text())
    client = s3.client()
    for name, entry in manifest["files"].items():
        head = client.head_object(Bucket="dkr-backups", Key=f"{ENV}/{backup_id}/{name}")
        assert head["Metadata"]["sha256"] == entry["sha256"] and head["ContentLength"] == entry["size"]
    shutil.rmtree(suite.folder(project) / backup_id)
    suite.wipe(project)
    restored = suite.ok(project.cli("restore", "--env", ENV, backup_id, "--from", "offsite", "--yes"))
    assert f"from {backup_id}" in restored.stdout
    assert suite.fingerprint(project) == before
    assert s3.secret_key not in restored.stdout + restored.stderr


def test_backup_corruption_is_refused_before_anything_changes(project: Project) -> None:
    suite.corruption_is_refused(project)


def test_backup_killed_backups_leave_no_partial_file(project: Project) -> None:
    suite.interruption(project)


def test_backup_failing_restore_leaves_the_databases_unchanged(project: Project) -> None:
    suite.failing_restore_changes_nothing(project)


def test_backup_retention_keeps_exactly_the_newest_verified(project: Project) -> None:
    suite.retention(project)


def test_backup_output_holds_no_secret(project: Project) -> None:
    made = suite.ok(project.cli("backup", "--env", ENV, "--verify"))
    listed = suite.ok(project.cli("backup", "list", "--env", ENV))
    for value in strong_secrets().values():
        assert value not in made.stdout + made.stderr + listed.stdout
    manifest = (suite.folder(project) / made.stdout.split()[1].rstrip(":") / "manifest.json").read_text()
    assert json.loads(manifest)["release"]["versions"]["api-gateway"]  # the release it belongs to
    for value in strong_secrets().values():
        assert value not in manifest


def test_zzzz_history_has_every_change(project: Project) -> None:
    """Every command that changes something goes through the lock and the audit log: history is complete."""
    assert project.cli("migrate", "--env", ENV).returncode == 0
    assert project.cli("down", "--env", ENV).returncode == 0
    assert project.cli("down", "--env", ENV, "--volumes", "--yes").returncode == 0
    left = [p for p in (project.root / ".mfe" / ENV).rglob("*") if p.suffix in (".env", ".pem")]
    assert left == []  # with the data go its keys: env files, the self-signed key
    history = json.loads(project.cli("history", "--env", ENV, "--json").stdout)
    actions = {h["action"] for h in history}
    assert {"up", "rollback", "migrate", "restore", "down", "images prune"} <= actions, actions
    assert [h.get("volumes") for h in history if h["action"] == "down"][-2:] == [False, True]
