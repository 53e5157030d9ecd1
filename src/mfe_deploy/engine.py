"""What the local Docker Engine can do, asked cheaply and only when one could be there."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from mfe_deploy.errors import CommandFailed
from mfe_deploy.exec.command import Command
from mfe_deploy.render import Capabilities

if TYPE_CHECKING:
    from mfe_deploy.exec.runner import Runner

START_INTERVAL_SINCE = (25, 0)


def parse_version(text: str) -> tuple[int, int] | None:
    match = re.match(r"^\s*v?(\d+)\.(\d+)", text)
    return (int(match[1]), int(match[2])) if match else None


def capabilities_for(version: tuple[int, int] | None) -> Capabilities:
    """Unknown engine: render for a current one (the user's laptop or a fresh host)."""
    return Capabilities(healthcheck_start_interval=version is None or version >= START_INTERVAL_SINCE)


def server_version() -> tuple[int, int] | None:
    if shutil.which("docker") is None:
        return None
    if "DOCKER_HOST" not in os.environ and not Path("/var/run/docker.sock").exists():
        return None
    from mfe_deploy.exec.process import LocalProcess

    try:
        return version_via(LocalProcess(), timeout=5)
    except CommandFailed:
        return None


def version_via(runner: Runner, timeout: float = 30) -> tuple[int, int] | None:
    """The engine's version, asked where `runner` runs commands (this machine or a remote host)."""
    done = runner.run(Command(("docker", "version", "--format", "{{.Server.Version}}")), timeout=timeout)
    return parse_version(done.stdout) if done.returncode == 0 else None


def capabilities(engine_version: str | None) -> Capabilities:
    if engine_version is not None:
        return capabilities_for(parse_version(engine_version))
    return capabilities_for(server_version())
