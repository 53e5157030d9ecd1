"""Times of `up` (first, no-op, new version) and of a rollback on a 3-node Docker Swarm, beside the same
operations on the docker runtime (one engine), with the failed requests of a fixed-rate load through
nginx during each operation (swarm: from the client namespace; docker: from this machine).

The swarm is three engines in network namespaces (tests/swarm.sh, started and removed here). Both
stacks are staging-like (2 gateway replicas, nginx TLS, RabbitMQ), run one after the other (not side by
side: two stacks would share the two cores). Needs root, a Docker engine and the stand-in images.

    .venv/bin/python bench/swarm.py [--rate 40]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.conftest import strong_secrets  # noqa: E402
from tests.engines import remove_images  # noqa: E402
from tests.load import Load  # noqa: E402
from tests.pg import free_port  # noqa: E402
from tests.swarms import SERVICES, Project, Swarm, build, under_load  # noqa: E402

PREFIX = "mfe-bench-sw"


def timed(operation: Callable[[], subprocess.CompletedProcess[str]]) -> tuple[float, int]:
    started = time.monotonic()
    done = operation()
    if done.returncode != 0:
        print(done.stdout[-2000:], done.stderr[-2000:], file=sys.stderr)
    return time.monotonic() - started, done.returncode


def run(
    project: Project, load: Callable[[Callable[[], Any]], tuple[dict[str, Any], Any]], log_in: Callable[[], str]
) -> list[tuple[str, ...]]:
    rows = []
    seconds, code = timed(lambda: project.cli("up", "--version", "v1"))
    rows.append(("up (first, images built)", f"{seconds:.1f}", "-", str(code)))
    project.token = log_in()
    for label, args in (
        ("up (no-op)", ("up", "--version", "v1")),
        ("up v1 -> v2 (every service)", ("up", "--version", "v2")),
        ("rollback api-gateway", ("rollback", "api-gateway")),
    ):
        took: list[tuple[float, int]] = []
        tally, _ = load(lambda args=args, took=took: took.append(timed(lambda: project.cli(*args))))
        seconds, code = took[0]
        rows.append((label, f"{seconds:.1f}", f"{tally['failed']}/{tally['sent']}", str(code)))
    return rows


def docker_stack(root: Path, https: int) -> Project:
    shutil.copytree(REPO / "environments", root / "environments")
    (root / "environments" / "bd.yaml").write_text(
        "extends: staging\nruntime: docker\nservices: {api-gateway: {replicas: 2}}\n"
        f"nginx: {{domain: localhost, http_port: {free_port()}, https_port: {https},\n"
        "        rate_limit: {rate: 100000r/s, burst: 100000}}\n"
        "images: {postgres: mfe-local/postgres:15, redis: mfe-local/redis:7, rabbitmq: mfe-local/rabbitmq:3,\n"
        f"         nginx: mfe-local/nginx:1.22, service_base: mfe-local/python:3.11, services_prefix: {PREFIX}}}\n"
    )
    return Project(root, "bd", strong_secrets("bench"))


def main() -> None:
    import httpx

    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=40)
    rate = parser.parse_args().rate
    results: dict[str, list[tuple[str, ...]]] = {}
    remove_images(PREFIX)
    with tempfile.TemporaryDirectory() as tmp:
        https = free_port()
        base = f"https://localhost:{https}"
        docker = docker_stack(Path(tmp) / "docker", https)

        def local_load(op: Callable[[], Any]) -> tuple[dict[str, Any], Any]:
            with Load(base, docker.token, rate=rate) as load:
                time.sleep(1.5)
                result = op()
                time.sleep(1.5)
            return {"sent": load.tally.sent, "failed": load.tally.failed}, result

        def local_log_in() -> str:
            body = {"email": "bench@example.com", "password": "correct horse"}
            with httpx.Client(base_url=base, verify=False, timeout=10) as client:  # noqa: S501 - self-signed
                client.post("/api/auth/register", json=body)
                return str(client.post("/api/auth/login", json=body).json()["access_token"])

        try:  # the images are built once, untimed: v1 from this checkout, v2 from v1
            first = docker.cli("up", "--version", "v1")
            assert first.returncode == 0, first.stdout + first.stderr
            for name in SERVICES:
                build(f"{PREFIX}/{name}:v2", f"FROM {PREFIX}/{name}:v1\nLABEL bench.version=v2\n")
            docker.cli("down", "--volumes", "--yes")
            results["docker (1 engine)"] = run(docker, local_load, local_log_in)
        finally:
            docker.cli("down", "--volumes", "--yes")

        swarm = Swarm("/tmp/mfe-swarm-b", 3)
        swarm.harness("down")
        swarm.harness("up")
        project = Project.make(Path(tmp) / "swarm", "bs", swarm, PREFIX)

        def swarm_log_in() -> str:
            project.log_in("bench@example.com")
            return project.token

        try:
            results["swarm (3 nodes)"] = run(project, lambda op: under_load(project.token, rate, op), swarm_log_in)
        finally:
            project.cli("down", "--volumes", "--yes")
            swarm.harness("down")
    remove_images(PREFIX)
    print(f"\n{'operation':30} {'runtime':18} {'seconds':>8} {'failed/sent':>12} {'exit':>5}")
    for runtime, rows in results.items():
        for label, seconds, failed, code in rows:
            print(f"{label:30} {runtime:18} {seconds:>8} {failed:>12} {code:>5}")
    print("goal: 0 failed requests in every row. The swarm's first up includes sending the images to 3 engines.")


if __name__ == "__main__":
    main()
