"""The rendered files are accepted by the real tools: Compose v2 and nginx."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mfe_deploy.bundle import write
from mfe_deploy.config import loader
from mfe_deploy.render import render
from tests.conftest import REPO, strong_secrets
from tests.tools import compose_binary, for_this_nginx, nginx_binary, nginx_in_namespace

ENVS = ("development", "staging", "production")
APP = ("api-gateway", "auth", "payments", "admin", "profile")
STORES = ("postgres", "redis", "rabbitmq")


def _bundle(name: str, out: Path, *, this_nginx: bool = False) -> Path:
    loaded, secrets = loader.load_with_secrets(REPO, name, environ=strong_secrets())
    write(render(for_this_nginx(loaded.env) if this_nginx else loaded.env, secrets), out)
    return out


def _compose_config(folder: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [compose_binary(), "-f", "compose.yml", "config", "--format", "json"],
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


@pytest.mark.parametrize("name", ENVS)
def test_compose_accepts_the_bundle(name: str, tmp_path: Path) -> None:
    folder = _bundle(name, tmp_path / name)
    proc = subprocess.run(
        [compose_binary(), "-f", "compose.yml", "config", "-q"], cwd=folder, capture_output=True, text=True
    )
    assert (proc.returncode, proc.stderr) == (0, "")


@pytest.mark.parametrize("name", ENVS)
def test_compose_model_follows_the_rules(name: str, tmp_path: Path) -> None:
    folder = _bundle(name, tmp_path / name)
    assert "version" not in (folder / "compose.yml").read_text().split("services:")[0]
    config = _compose_config(folder)
    services = config["services"]
    restart = {"development": "no", "staging": "unless-stopped", "production": "always"}[name]
    for svc_name, svc in services.items():
        assert "healthcheck" in svc, svc_name
        assert svc.get("restart") == restart, svc_name
        assert "no-new-privileges:true" in svc["security_opt"], svc_name
        assert svc["cap_drop"] == ["ALL"], svc_name
        limits = svc["deploy"]["resources"]["limits"]
        assert limits["memory"] and limits["pids"], svc_name
        for dep in svc.get("depends_on", {}).values():
            assert dep["condition"] == "service_healthy", svc_name
    for svc_name in APP:
        svc = services[svc_name]
        # Root only to read its mounted env file, with three capabilities, and KILL for its init to forward
        # SIGTERM to the service, which has switched to 10001.
        assert svc["user"] == "0:0"
        assert sorted(svc["cap_add"]) == ["DAC_READ_SEARCH", "KILL", "SETGID", "SETUID"]
        assert svc["entrypoint"][-2:] == ["--user", "10001:10001"]
        assert "env_file" not in svc and "environment" in svc and set(svc["environment"]) == {"PORT"}
        assert svc["read_only"] is True
    for store in STORES:
        if store in services:
            assert list(services[store]["networks"]) == ["data"]
            if name != "development":
                assert "ports" not in services[store], f"{store} publishes a host port in {name}"
    assert config["networks"]["data"].get("internal", False) is (name != "development")
    replicas = services["api-gateway"]["deploy"].get("replicas", 1)
    assert replicas == (2 if name == "production" else 1)


def test_development_publishes_ports(tmp_path: Path) -> None:
    services = _compose_config(_bundle("development", tmp_path / "dev"))["services"]
    published = {n: sorted(int(p["published"]) for p in s.get("ports", [])) for n, s in services.items()}
    assert published == {
        "postgres": [5432],
        "redis": [6379],
        "api-gateway": [3000],
        "auth": [3001],
        "payments": [3002],
        "admin": [3003],
        "profile": [3004],
    }
    # On this machine only: its stores have documented development passwords.
    assert {p["host_ip"] for s in services.values() for p in s.get("ports", [])} == {"127.0.0.1"}


@pytest.mark.parametrize("name", ["staging", "production"])
def test_nginx_accepts_the_config(name: str, tmp_path: Path) -> None:
    folder = _bundle(name, tmp_path / name, this_nginx=True)
    conf = (folder / "nginx" / "nginx.conf").read_text()
    proc = nginx_in_namespace(conf, tmp_path, {}, [nginx_binary(), "-t"])
    assert proc.returncode == 0, proc.stderr
    assert "test is successful" in proc.stderr


GUIDE_NGINX = """
events {}
http {
upstream api_gateway {
    least_conn;
    server api-gateway-1:3000;
    server api-gateway-2:3000;
    keepalive 32;
}
server {
    listen 443 ssl;
    server_name api.example.com;
    ssl_certificate /etc/nginx/ssl/cert.pem;
    ssl_certificate_key /etc/nginx/ssl/key.pem;
    limit_req_zone $binary_remote_addr zone=api_limit:10m rate=100r/m;
    limit_req zone=api_limit burst=20 nodelay;
    location /api/ { proxy_pass http://api_gateway; }
}
}
"""


@pytest.mark.parametrize(
    ("conf", "hosts", "expected"),
    [
        (
            GUIDE_NGINX,
            {"api-gateway-1": "127.0.0.1", "api-gateway-2": "127.0.0.1"},
            '"limit_req_zone" directive is not allowed here',
        ),
        (
            GUIDE_NGINX.replace("    limit_req_zone", "#"),
            {"api-gateway": "127.0.0.1"},
            'host not found in upstream "api-gateway-1:3000"',
        ),
    ],
    ids=["zone-in-server", "replica-hostnames"],
)
def test_the_guides_nginx_mistakes_are_caught(conf: str, hosts: dict[str, str], expected: str, tmp_path: Path) -> None:
    """The harness can fail: the guide's own config fails it for the two reasons we fixed."""
    proc = nginx_in_namespace(conf, tmp_path, hosts, [nginx_binary(), "-t"])
    assert proc.returncode != 0
    assert expected in proc.stderr
