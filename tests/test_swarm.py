"""The swarm runtime on a real single-node Docker Swarm: an engine of its own in network namespaces
(tests/swarm.sh), reached at its unix socket, with nginx published in host mode on its namespace's
address and a fixed-rate load sent from a client namespace. Images are built on this machine's engine
and shipped by mfe-deploy to the swarm's (no registry)."""

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

import pytest

from tests.conftest import REPO, strong_secrets
from tests.engines import remove_images, require_engine_with_standins

ENV = "swt"
PREFIX = "mfe-test-sw"
SERVICES = ("api-gateway", "auth", "payments", "admin", "profile")
SWARM_DIR = "/tmp/mfe-swarm-t"
MANAGER = f"unix://{SWARM_DIR}/n1.sock"
NGINX = "https://10.251.0.11:8443"  # the node's namespace address; host-mode port
CLIENT_NS = "mfesw-cl"
RATE = 40

require_engine_with_standins()
if shutil.which("unshare") is None or shutil.which("ip") is None or os.geteuid() != 0:
    pytest.skip("a swarm in network namespaces needs root, iproute2 and util-linux", allow_module_level=True)


def swarm(action: str) -> None:
    env = {**os.environ, "NODES": "1", "SWARM_DIR": SWARM_DIR}
    done = subprocess.run(["bash", str(REPO / "tests" / "swarm.sh"), action], env=env, capture_output=True,
                          text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def on_swarm(*argv: str) -> str:
    done = subprocess.run(["docker", "-H", MANAGER, *argv], capture_output=True, text=True, timeout=120, check=False)
    return done.stdout


def build(tag: str, dockerfile: str) -> None:
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    done = subprocess.run(["docker", "build", "-q", "-t", tag, "-"], input=dockerfile, text=True, env=env,
                          capture_output=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr


@dataclass
class Project:
    root: Path
    secrets: dict[str, str]
    token: str = ""

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "mfe_deploy", "-C", str(self.root), *args, "--env", ENV]
        env = {**os.environ, **self.secrets}
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900, check=False)


def in_client(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", CLIENT_NS, *argv], input=stdin, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip


def request(method: str, path: str, body: dict[str, str] | None = None, token: str = "") -> tuple[int, str]:
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


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    root = tmp_path_factory.mktemp("swarm") / "project"
    shutil.copytree(REPO / "environments", root / "environments")
    (root / "environments" / f"{ENV}.yaml").write_text(
        "extends: staging\nruntime: swarm\nservices: {api-gateway: {replicas: 2}}\n"
        "nginx: {domain: localhost, http_port: 8080, https_port: 8443, rate_limit: {rate: 100000r/s, burst: 100000}}\n"
        f'swarm: {{manager: "{MANAGER}", update_delay: 1s, monitor: 5s}}\n'
        "images: {postgres: mfe-local/postgres:15, redis: mfe-local/redis:7, rabbitmq: mfe-local/rabbitmq:3,\n"
        f"         nginx: mfe-local/nginx:1.22, service_base: mfe-local/python:3.11, services_prefix: {PREFIX}}}\n"
    )
    remove_images(PREFIX)
    swarm("down")  # whatever an interrupted run left
    swarm("up")
    p = Project(root, strong_secrets())
    try:
        yield p
    finally:
        p.cli("down", "--volumes", "--yes")
        swarm("down")
        remove_images(PREFIX)


def versions(project: Project) -> dict[str, set[str]]:
    """VERSION per service from `status`, one per running task."""
    found: dict[str, set[str]] = {}
    for line in project.cli("status").stdout.splitlines():
        cells = line.split()
        if len(cells) == 5 and cells[0] in SERVICES:
            found.setdefault(cells[0], set()).add(cells[3])
    return found


def under_load(project: Project, operation: Callable[[], subprocess.CompletedProcess[str]]) -> tuple[dict, str]:
    argv = [
        "ip",
        "netns",
        "exec",
        CLIENT_NS,
        sys.executable,
        "-m",
        "tests.load",
        NGINX,
        project.token,
        str(RATE),
        "600",
    ]
    with subprocess.Popen(argv, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as load:
        assert load.stdout is not None and load.stdin is not None
        assert load.stdout.readline().strip() == "started"
        try:
            time.sleep(1.5)
            done = operation()
            time.sleep(1.5)
        finally:
            load.stdin.close()
            tally = json.loads(load.stdout.read().strip().splitlines()[-1])
    print(f"{tally['sent']} requests, {tally['failed']} failed ({tally['reasons'] or 'none'})")
    assert tally["sent"] > RATE * 3, tally
    return tally, done.stdout + done.stderr


def test_up_runs_the_stack_with_secrets_only_as_swarm_secrets(project: Project) -> None:
    up = project.cli("up", "--version", "v1")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "shipping" in up.stdout + up.stderr  # the swarm's engine had none of the images
    assert versions(project) == {key: {"v1"} for key in SERVICES}
    assert project.cli("status").stdout.count("_api-gateway.") == 2  # two replicas
    # Through nginx from another namespace: register, log in, an authenticated read across the gateway.
    code, text = request("POST", "/api/auth/register", {"email": "sw@example.com", "password": "correct horse"})
    assert code in (200, 201), text
    code, text = request("POST", "/api/auth/login", {"email": "sw@example.com", "password": "correct horse"})
    assert code == 200, text
    project.token = json.loads(text)["access_token"]
    assert request("GET", "/api/auth/me", token=project.token)[0] == 200
    # No secret value in any service's spec (what `docker service inspect` shows anyone with API access).
    names = on_swarm("service", "ls", "--format", "{{.Name}}").split()
    assert len(names) == 9, names
    spec = on_swarm("service", "inspect", *names)
    leaked = [k for k, v in project.secrets.items() if v in spec or v.split("@")[0].split("//")[-1] in spec]
    assert leaked == [], leaked
    assert "universal-mfe-swt_auth_env_" in on_swarm("secret", "ls", "--format", "{{.Name}}")


def test_up_of_the_same_release_does_nothing(project: Project) -> None:
    again = project.cli("up", "--version", "v1")
    assert again.returncode == 0 and "nothing to do" in again.stdout + again.stderr, again.stdout + again.stderr


def test_rolling_update_and_rollback_under_load(project: Project) -> None:
    for name in SERVICES:  # v2: the same code in a new image, as a CI build would have made it
        build(f"{PREFIX}/{name}:v2", f"FROM {PREFIX}/{name}:v1\nLABEL test.version=v2\n")
    tally, out = under_load(project, lambda: project.cli("up", "--version", "v2"))
    assert "is up" in out, out
    assert tally["failed"] <= 0.01 * tally["sent"], (tally, out)
    assert versions(project) == {key: {"v2"} for key in SERVICES}
    tally, out = under_load(project, lambda: project.cli("rollback", "api-gateway"))
    assert "api-gateway: now v1" in out, out
    assert tally["failed"] <= 0.01 * tally["sent"], (tally, out)
    assert versions(project)["api-gateway"] == {"v1"}


def test_a_release_whose_gateway_exits_is_rolled_back_by_swarm_and_the_cli_exits_1(project: Project) -> None:
    broken = 'RUN printf "#!/bin/sh\\necho broken release >&2\\nexit 3\\n" > /opt/mfe/bin/mfe-service'
    build(f"{PREFIX}/api-gateway:v3", f"FROM {PREFIX}/api-gateway:v2\nUSER 0\n{broken}\nUSER 10001:10001\n")
    for name in SERVICES[1:]:
        build(f"{PREFIX}/{name}:v3", f"FROM {PREFIX}/{name}:v2\nLABEL test.version=v3\n")
    done = project.cli("up", "--version", "v3")
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "Swarm rolled api-gateway back" in out and "non-zero exit (3)" in out, out
    found = versions(project)  # every service went back to the last good release
    assert found == {**{key: {"v2"} for key in SERVICES}, "api-gateway": {"v1"}}, found
    assert request("GET", "/api/auth/me", token=project.token)[0] == 200
    releases = project.cli("releases").stdout
    assert "auto-rollback" in releases, releases


def test_a_rotated_secret_is_a_new_swarm_secret_and_the_old_one_goes(project: Project) -> None:
    before = set(on_swarm("secret", "ls", "--format", "{{.Name}}").split())
    project.secrets["STAGING_JWT_SECRET"] = "rotated-jwt-secret-5d1e9a7c3b-0a8f6e2d4c1b9a7e"
    done = project.cli("up", "--version", "v2")
    assert done.returncode == 0, done.stdout + done.stderr
    after = set(on_swarm("secret", "ls", "--format", "{{.Name}}").split())
    kinds = {n.rsplit("_", 1)[0].removeprefix("universal-mfe-swt_") for n in after - before}
    assert kinds == {f"{name}_env" for name in SERVICES}, (before, after)
    assert len(after) == len(before), (before, after)  # the old versions were removed once converged
    assert request("GET", "/api/auth/me", token=project.token)[0] == 401  # signed with the old key
    code, text = request("POST", "/api/auth/login", {"email": "sw@example.com", "password": "correct horse"})
    assert code == 200, text
    assert request("GET", "/api/auth/me", token=json.loads(text)["access_token"])[0] == 200


def test_down_with_volumes_leaves_nothing_on_the_swarm(project: Project) -> None:
    done = project.cli("down", "--volumes", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    label = "label=com.docker.stack.namespace=universal-mfe-swt"
    for kind in ("service", "network", "volume", "secret", "config"):
        left = on_swarm(kind, "ls", "-q", "--filter", label).split()
        assert left == [], (kind, left)
