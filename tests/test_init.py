"""`mfe-deploy init` then `up`, as a new user runs them: an empty folder, nothing else written by hand, and
the user's own service reachable through the gateway. The README's quick start is these commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from mfe_deploy import scaffold
from mfe_deploy.errors import UsageError


def mfe(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR", "VIRTUAL_ENV")}
    argv = [sys.executable, "-m", "mfe_deploy", *args]
    return subprocess.run(argv, cwd=cwd, env=environ, capture_output=True, text=True, timeout=600, check=False)


def test_init_then_up_serves_your_service_through_the_gateway(tmp_path: Path) -> None:
    made = mfe(tmp_path, "init", "shop")
    assert made.returncode == 0, made.stderr
    folder = tmp_path / "shop"
    assert made.stdout.splitlines()[-4:] == [
        "next:",
        f"  cd {folder}",
        "  mfe-deploy up --env development",
        "  curl http://localhost:3000/api/hello/hello",
    ]
    again = mfe(tmp_path, "init", "shop")
    assert again.returncode == 2 and "init never overwrites" in again.stderr
    assert (folder / ".gitignore").read_text().count(".mfe/") == 1
    # --runtime local: this machine's Docker engine has no registry to pull the service's base image from.
    up = mfe(folder, "up", "--env", "development", "--runtime", "local")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        with httpx.Client(base_url="http://127.0.0.1:3000", timeout=10) as gateway:
            hello = gateway.get("/api/hello/hello")
            assert (hello.status_code, hello.json()) == (200, {"service": "hello", "message": "hello from hello"})
            assert gateway.get("/api/hello/orders").status_code == 401  # not declared public: a token first
            assert gateway.get("/health").json()["services"]["hello"] == "healthy"
    finally:
        down = mfe(folder, "down", "--env", "development", "--runtime", "local", "--volumes", "--yes")
    assert down.returncode == 0, down.stderr


@pytest.mark.parametrize(
    ("service", "port", "message"),
    [
        ("auth", 3010, "not one of the bundled ones"),
        ("Hello", 3010, "lower-case letters"),
        ("hello", 3000, "other than the gateway's 3000"),
        ("hello", 80, "from 1024 to 65535"),
    ],
)
def test_init_refuses_a_name_or_port_the_project_could_not_run(service: str, port: int, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        scaffold.files("shop", service, port)


@pytest.mark.parametrize(("folder", "name"), [("My Shop", "my-shop"), ("2024_api", "api"), ("---", "my-project")])
def test_a_project_is_named_after_its_folder(folder: str, name: str) -> None:
    assert scaffold.project_name(folder) == name
