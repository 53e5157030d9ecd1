"""Failed requests during deploys and rollbacks through nginx over HTTPS (goal: 0 in every row).

A fixed-rate load (tests/load.py: keep-alive clients and a new connection per request, GET and POST)
runs from 2 s before each operation to 2 s after it, on a staging-like stack (2 gateway replicas,
nginx TLS, RabbitMQ) on the Docker engine here. Rows: steady state; `up` v1 -> v2 of every service;
`rollback` of each of the five services; `up` of a v3 whose gateway exits at start (rolled back by
itself). Needs a Docker engine and the stand-in images (scripts/setup-docker).

    .venv/bin/python bench/zero_downtime.py [--rate 200]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.conftest import strong_secrets  # noqa: E402
from tests.load import Load  # noqa: E402
from tests.pg import free_port  # noqa: E402

PREFIX = "mfe-bench-zd"
SERVICES = ("api-gateway", "auth", "payments", "admin", "profile")
# Every staging secret the suite sets (tests/conftest.py), but Sentry's: no DSN, no Sentry.
SECRETS = {k: v for k, v in strong_secrets("bench").items() if k.startswith("STAGING_") and "SENTRY" not in k}


def docker_build(tag: str, dockerfile: str) -> None:
    subprocess.run(["docker", "build", "-q", "-t", tag, "-"], input=dockerfile, text=True, check=True,
                   capture_output=True, env={**os.environ, "DOCKER_BUILDKIT": "0"})  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=200)
    rate = parser.parse_args().rate
    import httpx

    env = {**os.environ, **SECRETS}
    https = free_port()
    rows: list[tuple[str, int, int, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "project"
        shutil.copytree(REPO / "environments", root / "environments")
        (root / "environments" / "zd.yaml").write_text(f"""\
extends: staging
runtime: docker
services: {{api-gateway: {{replicas: 2}}}}
nginx: {{domain: localhost, http_port: {free_port()}, https_port: {https},
         rate_limit: {{rate: 100000r/s, burst: 100000}}}}
images: {{postgres: mfe-local/postgres:15, redis: mfe-local/redis:7, rabbitmq: mfe-local/rabbitmq:3,
          nginx: mfe-local/nginx:1.22, service_base: mfe-local/python:3.11, services_prefix: {PREFIX}}}
""")
        cli = [sys.executable, "-m", "mfe_deploy", "-C", str(root)]

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*cli, *args, "--env", "zd"], env=env, capture_output=True, text=True, timeout=900)

        try:
            first = run("up", "--version", "v1")
            assert first.returncode == 0, first.stderr
            for s in SERVICES:  # v2: the same code, a new image (built in a second, as a CI build would have)
                docker_build(f"{PREFIX}/{s}:v2", f"FROM {PREFIX}/{s}:v1\nLABEL bench.version=v2\n")
            base = f"https://localhost:{https}"
            with httpx.Client(base_url=base, verify=False, timeout=15) as gw:  # noqa: S501 - self-signed here
                gw.post("/api/auth/register", json={"email": "load@example.com", "password": "correct horse"})
                token = gw.post("/api/auth/login", json={"email": "load@example.com", "password": "correct horse"})
                token = token.json()["access_token"]

            def measured(name: str, operation: Callable[[], object]) -> None:
                with Load(base, token, rate=rate) as load:
                    time.sleep(2)
                    started = time.monotonic()
                    operation()
                    took = time.monotonic() - started
                    time.sleep(2)
                rows.append((name, load.tally.sent, load.tally.failed, took))
                print(f"{name:40} {load.tally.sent:7} {load.tally.failed:7} {took:8.1f}", flush=True)
                for reason, count in load.tally.reasons.most_common(3):
                    print(f"    {count} x {reason}", flush=True)

            print(f"{'operation':40} {'sent':>7} {'failed':>7} {'seconds':>8}   ({rate:.0f} requests/s)")
            measured("steady state, no operation (10 s)", lambda: time.sleep(10))
            measured("up v1 -> v2 (every service)", lambda: run("up", "--version", "v2"))
            for s in SERVICES:
                measured(f"rollback {s} (v2 -> v1)", lambda s=s: run("rollback", s))
            broken = 'RUN printf "#!/bin/sh\\nexit 3\\n" > /opt/mfe/bin/mfe-service'  # the entrypoint compose runs
            docker_build(
                f"{PREFIX}/api-gateway:v3", f"FROM {PREFIX}/api-gateway:v1\nUSER 0\n{broken}\nUSER 10001:10001\n"
            )
            for s in SERVICES[1:]:
                docker_build(f"{PREFIX}/{s}:v3", f"FROM {PREFIX}/{s}:v1\nLABEL bench.version=v3\n")
            measured("up v3, gateway exits at start (rolls back)", lambda: run("up", "--version", "v3"))
        finally:
            subprocess.run([*cli, "down", "--env", "zd", "--volumes", "--yes"], env=env, capture_output=True)
            tags = subprocess.run(["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", f"{PREFIX}/*"],
                                  capture_output=True, text=True).stdout.split()  # fmt: skip
            if tags:
                subprocess.run(["docker", "image", "rm", "-f", *tags], capture_output=True)
    failed = sum(r[2] for r in rows)
    print(f"failed requests in all rows: {failed} (goal 0) {'ok' if failed == 0 else 'MISSED'}")


if __name__ == "__main__":
    main()
