"""A killed run's stacks and processes are removed before the next run (tests/leftovers.py), and nothing else."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import leftovers
from tests.engines import require_engine_with_standins

IMAGE = "mfe-local/python:3.11"


@pytest.fixture
def names() -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for name in made:  # whatever the code under test did not remove
        subprocess.run(["docker", "rm", "-f", "-v", name], capture_output=True, check=False)
        subprocess.run(["docker", "volume", "rm", "-f", name], capture_output=True, check=False)


def container(name: str, project: str, folder: Path, volume: str) -> None:
    labels = [f"com.docker.compose.project={project}", f"com.docker.compose.project.working_dir={folder}"]
    argv = ["docker", "run", "-d", "--name", name, "-v", f"{volume}:/data", "--entrypoint", "sleep"]
    argv += [arg for label in labels for arg in ("--label", label)]
    done = subprocess.run([*argv, IMAGE, "300"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_a_killed_runs_projects_and_processes_go_and_nothing_else(tmp_path: Path, names: list[str]) -> None:
    require_engine_with_standins()
    prefix = str(tmp_path / "mfe-pytest-")
    tag = uuid.uuid4().hex[:8]
    old, mine = f"mfe-leftover-old-{tag}", f"mfe-leftover-mine-{tag}"
    for project, folder in ((old, Path(f"{prefix}abc/docker/zdt0/project")), (mine, tmp_path / "elsewhere")):
        volume = f"{project}_data"
        made = subprocess.run(
            ["docker", "volume", "create", "--label", f"com.docker.compose.project={project}", volume],
            capture_output=True,
            check=False,
        )
        assert made.returncode == 0
        names += [project, volume]
        container(project, project, folder, volume)
    stale = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", f"{prefix}abc/run/x.conf"])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", str(tmp_path / "x.conf")])
    try:
        gone = leftovers.remove(prefix, engine=True)
        assert gone == ["1 processes", f"{old}: 1 containers, 1 volumes, 0 networks"], gone
        assert stale.wait(timeout=15) != 0 and other.poll() is None
        ps = subprocess.run(["docker", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True).stdout
        volumes = subprocess.run(["docker", "volume", "ls", "-q"], capture_output=True, text=True).stdout.split()
        assert old not in ps.split() and f"{old}_data" not in volumes
        assert mine in ps.split() and f"{mine}_data" in volumes  # not under a run's folder: kept
    finally:
        for proc in (stale, other):
            proc.kill()
            proc.wait()
