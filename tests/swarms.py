"""What the swarm tests share: a swarm of engines in network namespaces (tests/swarm.sh), a project
whose environment runs on it, requests and a fixed-rate load sent from the swarm's client namespace."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import figures
from tests.conftest import REPO, strong_secrets
from tests.engines import remove_images

SERVICES = ("api-gateway", "auth", "payments", "admin", "profile")
# The manager (10.251.0.11 in the client namespace's hosts file); nginx's port in host mode. nginx serves
# its domain only: an address typed by hand is refused at the handshake.
DOMAIN = "swarm.mfe.test"
NGINX = f"https://{DOMAIN}:8443"
CLIENT_NS = "mfesw-cl"


def skip_without_namespaces() -> None:
    if shutil.which("unshare") is None or shutil.which("ip") is None or os.geteuid() != 0:
        pytest.skip("a swarm in network namespaces needs root, iproute2 and util-linux", allow_module_level=True)


@dataclass
class Swarm:
    folder: str
    nodes: int

    def engine(self, n: int = 1) -> str:
        return f"unix://{self.folder}/n{n}.sock"

    def harness(self, *action: str) -> None:
        env = {**os.environ, "NODES": str(self.nodes), "SWARM_DIR": self.folder}
        argv = ["bash", str(REPO / "tests" / "swarm.sh"), *action]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stdout + done.stderr

    def docker(self, *argv: str, n: int = 1) -> str:
        command = ["docker", "-H", self.engine(n), *argv]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False).stdout


def build(tag: str, dockerfile: str) -> None:
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    argv = ["docker", "build", "-q", "-t", tag, "-"]
    done = subprocess.run(argv, input=dockerfile, text=True, env=env, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr


@dataclass
class Project:
    root: Path
    env: str
    secrets: dict[str, str]
    token: str = ""

    @classmethod
    def make(cls, root: Path, env: str, swarm: Swarm, prefix: str) -> Project:
        shutil.copytree(REPO / "environments", root / "environments")
        nodes = ", ".join(f'"{swarm.engine(n)}"' for n in range(2, swarm.nodes + 1))
        (root / "environments" / f"{env}.yaml").write_text(
            "extends: staging\nruntime: swarm\nservices: {api-gateway: {replicas: 2}}\n"
            f"nginx: {{domain: {DOMAIN}, http_port: 8080, https_port: 8443,\n"
            "        rate_limit: {rate: 100000r/s, burst: 100000}}\n"
            f'swarm: {{manager: "{swarm.engine()}", nodes: [{nodes}], update_delay: 1s, monitor: 5s}}\n'
            "images: {postgres: mfe-local/postgres:15, redis: mfe-local/redis:7, rabbitmq: mfe-local/rabbitmq:3,\n"
            f"         nginx: mfe-local/nginx:1.22, service_base: mfe-local/python:3.11, services_prefix: {prefix}}}\n"
        )
        return cls(root, env, strong_secrets())

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "mfe_deploy", "-C", str(self.root), *args, "--env", self.env]
        env = {**os.environ, **self.secrets}
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900, check=False)

    def versions(self) -> dict[str, set[str]]:
        """VERSION per service from `status`, one per running task."""
        found: dict[str, set[str]] = {}
        for line in self.cli("status").stdout.splitlines():
            cells = line.split()
            if len(cells) == 5 and cells[0] in SERVICES:
                found.setdefault(cells[0], set()).add(cells[3])
        return found

    def within(self, tally: dict[str, Any], share: float) -> None:
        """Fails when more than `share` of the requests failed, with the gateway's warnings about its
        upstreams (which replica, which error), the evidence a rare failure otherwise leaves nowhere."""
        if not tally["failed"]:
            return
        lines = self.cli("logs", "api-gateway", "--tail", "2000").stdout.splitlines()
        warnings = "\n".join(line for line in lines if "upstream" in line)
        print(f"the gateway's warnings:\n{warnings or '(none)'}")
        assert tally["failed"] <= share * tally["sent"], f"{tally}\nthe gateway's warnings:\n{warnings}"

    def log_in(self, email: str = "sw@example.com") -> None:
        request("POST", "/api/auth/register", {"email": email, "password": "correct horse"})
        code, text = request("POST", "/api/auth/login", {"email": email, "password": "correct horse"})
        assert code == 200, text
        self.token = json.loads(text)["access_token"]


def in_client(*argv: str) -> subprocess.CompletedProcess[str]:
    command = ["ip", "netns", "exec", CLIENT_NS, *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def request(method: str, path: str, body: dict[str, Any] | None = None, token: str = "") -> tuple[int, str]:
    code = (
        "import httpx, json, sys\n"
        "a = json.loads(sys.argv[1])\n"
        "h = {'Authorization': 'Bearer ' + a['token']} if a['token'] else {}\n"
        "r = httpx.request(a['method'], a['url'], json=a['body'], headers=h, verify=False, timeout=10)\n"
        "print(r.status_code, r.text)\n"
    )
    spec = {"method": method, "url": NGINX + path, "body": body, "token": token}
    done = in_client(sys.executable, "-c", code, json.dumps(spec))
    status, _, text = done.stdout.partition(" ")
    return (int(status) if status.isdigit() else 0), text or done.stderr


def under_load(token: str, rate: int, operation: Callable[[], Any]) -> tuple[dict[str, Any], Any]:
    """A fixed-rate load from the client namespace during operation() (plus 1.5 s before and after)."""
    argv = ["ip", "netns", "exec", CLIENT_NS, sys.executable, "-m", "tests.load", NGINX, token, str(rate), "600", "0.5"]
    with subprocess.Popen(argv, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as load:
        assert load.stdout is not None and load.stdin is not None
        assert load.stdout.readline().strip() == "started"
        try:
            time.sleep(1.5)
            result = operation()
            time.sleep(1.5)
        finally:
            load.stdin.close()
            tally: dict[str, Any] = json.loads(load.stdout.read().strip().splitlines()[-1])
    figures.record(f"{tally['sent']} requests, {tally['failed']} failed ({tally['reasons'] or 'none'})")
    health = tally["health"]
    figures.record(f"/health: {health['sent']} polls, {health['failed']} not 200 ({health['reasons'] or 'none'})")
    assert tally["sent"] > rate * 3, tally
    return tally, result


@contextlib.contextmanager
def deployed_on(swarm: Swarm, root: Path, env: str, prefix: str) -> Iterator[Project]:
    """A fresh swarm and a project for it; afterwards the stack, the swarm and the images are gone.
    Images of `prefix` are removed first, so that a build starts from this checkout's code."""
    project = Project.make(root, env, swarm, prefix)
    remove_images(prefix)
    swarm.harness("down")  # whatever an interrupted run left
    swarm.harness("up")
    try:
        yield project
    finally:
        project.cli("down", "--volumes", "--yes")
        swarm.harness("down")
        remove_images(prefix)
