"""Deploys and rollbacks through nginx over HTTPS under a fixed-rate load (a shorter run of
bench/zero_downtime.py): start-first replacement; a gateway replacement gives the new gateways the other
colour's name and nginx switches colour by a file it checks per request (no reload: a reload closes idle
client keep-alive connections, and a client that sent on one at that instant got no answer), then the old
gateways finish what they hold and stop; the gateway retries a request whose upstream closed before
answering when the service may see it twice; a stopping service drains first (2 s of `Connection: close`
with its listener open, while the gateway never reuses a connection idle for over 1 s), so no POST is sent
on a connection the service is closing. Bound: 0 failed requests. The recreate-based deploy lost 33-42%."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests import figures
from tests.conftest import REPO, strong_secrets
from tests.engines import ContainerLogs, migrations_folder, remove_images, require_engine_with_standins
from tests.load import Load
from tests.pg import free_port

ENV = "zdt"
PREFIX = "mfe-test-zd"
SERVICES = ("api-gateway", "auth", "payments", "admin", "profile")
ALLOWED = 0.0  # failed / sent
RATE = 60  # requests/s: the suite shares two cores with the stack; the bench runs 200
# s: the aggregate /health polled as a load balancer does, counted and printed apart. The goal is 0 polls
# other than 200; it is not asserted yet: in a fresh-clone CI run 13 of 404 were 503 while a service's own
# database check failed under the load of three test groups (the gateway's `upstream unhealthy` log, printed
# below, says which service and what it said). Every run alone here measured 0.
HEALTH_EVERY = 0.25

require_engine_with_standins()


@dataclass
class Stack:
    root: Path
    base: str
    token: str

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "mfe_deploy", "-C", str(self.root), *args, "--env", ENV]
        env = {**os.environ, **strong_secrets()}
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900, check=False)


def build(tag: str, dockerfile: str) -> None:
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    argv = ["docker", "build", "-q", "-t", tag, "-"]
    done = subprocess.run(argv, input=dockerfile, text=True, env=env, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("zero-downtime") / "project"
    shutil.copytree(REPO / "environments", root / "environments")
    remove_images(PREFIX)
    https = free_port()
    (root / "environments" / f"{ENV}.yaml").write_text(
        "extends: staging\nruntime: docker\nservices: {api-gateway: {replicas: 2}}\n"
        "jwt: {expires_in: 2h}\n"  # the load's one token outlives the module (about 15 minutes)
        f"nginx: {{domain: localhost, http_port: {free_port()}, https_port: {https},\n"
        "        rate_limit: {rate: 100000r/s, burst: 100000}}\n"
        "images: {postgres: mfe-local/postgres:15, redis: mfe-local/redis:7, rabbitmq: mfe-local/rabbitmq:3,\n"
        f"         nginx: mfe-local/nginx:1.22, service_base: mfe-local/python:3.11, services_prefix: {PREFIX}}}\n"
    )
    s = Stack(root, f"https://localhost:{https}", "")
    up = s.cli("up", "--version", "v1")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        for name in SERVICES:  # v2: the same code in a new image, as a CI build would have made it
            build(f"{PREFIX}/{name}:v2", f"FROM {PREFIX}/{name}:v1\nLABEL test.version=v2\n")
        with httpx.Client(base_url=s.base, verify=False, timeout=15) as gw:
            gw.post("/api/auth/register", json={"email": "load@example.com", "password": "correct horse"})
            login = gw.post("/api/auth/login", json={"email": "load@example.com", "password": "correct horse"})
            s.token = login.json()["access_token"]
        yield s
    finally:
        s.cli("down", "--volumes", "--yes")
        remove_images(PREFIX)


def under_load(
    stack: Stack, operation: Callable[[], subprocess.CompletedProcess[str]], allowed: float = 0.0
) -> tuple[int, str]:
    with (
        ContainerLogs(f"universal-mfe-{ENV}", stack.root / "logs") as logs,
        Load(stack.base, stack.token, rate=RATE, health_every=HEALTH_EVERY) as load,
    ):
        time.sleep(1.5)
        done = operation()
        time.sleep(1.5)
    reasons = "; ".join(f"{n} x {r}" for r, n in load.tally.reasons.most_common(3))
    assert load.tally.sent > RATE * 3, load.tally.sent
    figures.record(f"{load.tally.sent} requests, {load.tally.failed} failed ({reasons or 'none'})")
    if load.tally.failed:  # the evidence, from every container's log (those replaced meanwhile included)
        print(logs.matching(*load.tally.request_ids, '"level": "error"', '"level": "warning"', "[error]"))
    unhealthy = "; ".join(f"{n} x {r}" for r, n in load.health.reasons.most_common(3))
    figures.record(f"/health: {load.health.sent} polls, {load.health.failed} not 200 ({unhealthy or 'none'})")
    if load.health.failed:
        print(logs.matching("upstream unhealthy"))
    ok = load.tally.failed <= allowed * load.tally.sent
    assert ok, f"{load.tally.failed} of {load.tally.sent} failed: {reasons}\n{done.stderr}"
    assert load.health.sent > 4, load.health.sent  # the poller ran
    return done.returncode, done.stdout + done.stderr


def test_up_of_a_new_version_of_every_service_under_load(stack: Stack) -> None:
    code, out = under_load(stack, lambda: stack.cli("up", "--version", "v2"), allowed=ALLOWED)
    assert code == 0, out
    assert out.count("replaced start-first") == len(SERVICES), out


def test_rollbacks_under_load(stack: Stack) -> None:
    for name in ("api-gateway", "auth"):
        code, out = under_load(stack, lambda name=name: stack.cli("rollback", name), allowed=ALLOWED)
        assert code == 0 and f"{name}: now v1" in out, out


def test_a_release_whose_gateway_exits_at_start_is_rolled_back_under_load(stack: Stack) -> None:
    """The old gateways never stop: the new ones are removed when they do not become healthy, and the
    automatic rollback puts the other services back start-first (measured before: 54% failed)."""
    broken = 'RUN printf "#!/bin/sh\\nexit 3\\n" > /opt/mfe/bin/mfe-service'  # the entrypoint compose runs
    build(f"{PREFIX}/api-gateway:v3", f"FROM {PREFIX}/api-gateway:v1\nUSER 0\n{broken}\nUSER 10001:10001\n")
    for name in SERVICES[1:]:
        build(f"{PREFIX}/{name}:v3", f"FROM {PREFIX}/{name}:v1\nLABEL test.version=v3\n")
    code, out = under_load(stack, lambda: stack.cli("up", "--version", "v3", "--timeout", "60"), allowed=ALLOWED)
    assert code == 1 and "rolled back" in out, out


def test_a_rollback_across_a_migration_not_marked_compatible_is_refused(stack: Stack) -> None:
    """v4 adds a migration to auth with no `-- mfe: compatible` line, v5 one with it. Back from v5 to v4
    crosses only the compatible one: done at once. Back to v2 crosses v4's: refused, naming it and the ways
    forward, until --ignore-schema (no load here: the refusal is the point)."""
    folder = migrations_folder(f"{PREFIX}/auth:v1")
    v4 = f"printf '%s\\n' 'CREATE TABLE scratch_v4 (id int);' > {folder}/0003_scratch.sql"
    v5 = f"printf '%s\\n' '-- mfe: compatible' 'ALTER TABLE users ADD COLUMN nickname text;' > {folder}/0004_nick.sql"
    for version, steps in (("v4", [v4]), ("v5", [v4, v5])):
        for name in SERVICES:
            extra = "".join(f"RUN {step}\n" for step in steps) if name == "auth" else ""
            build(f"{PREFIX}/{name}:{version}", f"FROM {PREFIX}/{name}:v1\nUSER 0\n{extra}USER 10001:10001\n")
        up = stack.cli("up", "--version", version)
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"auth: applied {'0003_scratch' if version == 'v4' else '0004_nick'}" in up.stdout + up.stderr

    compatible = stack.cli("rollback", "auth")
    assert compatible.returncode == 0 and "auth: now v4" in compatible.stdout, compatible.stdout + compatible.stderr

    refused = stack.cli("rollback", "auth", "--to", "v2")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    message = " ".join(refused.stderr.split())
    assert "auth v2 ran against an older schema: 0003_scratch applied since 0002_event_outbox is not marked" in message
    assert "0004_nick" not in message
    assert all(way in message for way in ("--ignore-schema", "--migrate-down", "--restore-backup")), message

    anyway = stack.cli("rollback", "auth", "--to", "v2", "--ignore-schema")
    assert anyway.returncode == 0 and "auth: now v2" in anyway.stdout, anyway.stdout + anyway.stderr


def psql(database: str, sql: str) -> str:
    """As the superuser inside the stack's postgres container (its socket trusts local users)."""
    labels = [f"label=com.docker.compose.project=universal-mfe-{ENV}", "label=com.docker.compose.service=postgres"]
    listing = ["docker", "ps", "-q", "--filter", labels[0], "--filter", labels[1]]
    found = subprocess.run(listing, capture_output=True, text=True, check=True)
    argv = ["docker", "exec", found.stdout.split()[0], "psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
    done = subprocess.run([*argv, "-U", "postgres", "-d", database, "-c", sql], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_rollback_across_a_rename_the_older_code_reads(stack: Stack) -> None:
    """v6 renames the column v5's auth logs in with (users.email). `rollback auth --to v5` is refused and
    `plan --rollback` shows the ways past it; --migrate-down undoes the rename and v5 logs in again;
    deployed again, --restore-backup returns auth's database to the backup `up` took just before the
    rename and counts the rows written since (here 3, written after the migration)."""
    folder = migrations_folder(f"{PREFIX}/auth:v1")
    up_sql = "ALTER TABLE users RENAME COLUMN email TO email_address;"
    down_sql = "ALTER TABLE users RENAME COLUMN email_address TO email;"
    steps = f"RUN printf '%s\\n' '{up_sql}' > {folder}/0005_rename.sql && "
    steps += f"printf '%s\\n' '{down_sql}' > {folder}/0005_rename.down.sql\n"
    for name in SERVICES:
        extra = steps if name == "auth" else ""
        build(f"{PREFIX}/{name}:v6", f"FROM {PREFIX}/{name}:v5\nUSER 0\n{extra}USER 10001:10001\n")
    assert stack.cli("up", "--version", "v5").returncode == 0  # every service on v5, auth included
    credentials = {"email": "rename@example.com", "password": "correct horse"}
    with httpx.Client(base_url=stack.base, verify=False, timeout=15) as gw:
        assert gw.post("/api/auth/register", json=credentials).status_code == 201

        def deploy_v6_then_write(rows: int) -> None:
            up = stack.cli("up", "--version", "v6")
            assert up.returncode == 0, up.stdout + up.stderr
            assert "auth: applied 0005_rename" in up.stdout + up.stderr
            release = json.loads(stack.cli("releases", "--json").stdout)[-1]  # the backup is linked to it
            assert release["migrations"] == {"auth": "0005_rename"} and release["backup"], release
            assert gw.post("/api/auth/login", json=credentials).status_code >= 500  # v5's code reads `email`
            psql("auth_db", f"INSERT INTO scratch_v4 SELECT generate_series(1, {rows})")

        deploy_v6_then_write(2)
        refused = stack.cli("rollback", "auth", "--to", "v5")
        assert refused.returncode == 1 and "0005_rename applied since 0004_nick" in " ".join(refused.stderr.split())
        planned = stack.cli("plan", "--rollback", "auth", "--to", "v5")
        assert planned.returncode == 1, planned.stdout + planned.stderr
        assert "rollback auth: v6 -> v5" in planned.stdout and "--migrate-down: undoes 0005_rename" in planned.stdout
        assert "--restore-backup: restores backup " in planned.stdout, planned.stdout

        down = stack.cli("rollback", "auth", "--to", "v5", "--migrate-down", "--yes")
        assert down.returncode == 0, down.stdout + down.stderr
        said = down.stdout + down.stderr
        assert "auth: undid 0005_rename" in said and "auth: now v5" in said, said
        assert gw.post("/api/auth/login", json=credentials).status_code == 200
        assert psql("auth_db", "SELECT count(*) FROM scratch_v4") == "2"  # undone: the rename, not the data

        deploy_v6_then_write(3)
        restored = stack.cli("rollback", "auth", "--to", "v5", "--restore-backup", "--yes")
        out = " ".join((restored.stdout + restored.stderr).split())
        assert restored.returncode == 0, out
        assert "lost since then: public.scratch_v4: 3 rows" in out and "auth: now v5" in out, out
        assert gw.post("/api/auth/login", json=credentials).status_code == 200
        assert psql("auth_db", "SELECT count(*) FROM scratch_v4") == "2"
