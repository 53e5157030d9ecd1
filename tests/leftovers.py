"""What a killed run of the suite left behind, removed before the next one starts (tests/groups.py).

A run stopped from outside (a CI time limit, a closed session) skips its fixtures' `down`: its stacks keep
running and their named volumes keep their data. The test environments have fixed names, so the next run's
compose project would be the same one: it found the old PostgreSQL volume with every migration applied, its
first release recorded no schema heads, and a rollback's schema check then blamed migrations the release had
run against (CI, 2026-12-07). Everything a run starts lives under its own `mfe-pytest-*` temporary folder:
the compose projects' working folders, the supervised processes' command lines. Whatever points into such a
folder when a new run starts belongs to a run that is over (one suite per machine, as .ci/run runs it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

PREFIX = str(Path(tempfile.gettempdir()) / "mfe-pytest-")
PROJECT = "com.docker.compose.project"


def _docker(*args: str) -> list[str]:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120, check=False)
    return done.stdout.splitlines() if done.returncode == 0 else []


def compose_projects(prefix: str = PREFIX) -> set[str]:
    """The compose projects with a container whose working folder is under `prefix` (a run's folder)."""
    found = set()
    fmt = '{{.Label "com.docker.compose.project"}}|{{.Label "com.docker.compose.project.working_dir"}}'
    for line in _docker("ps", "-a", "--filter", f"label={PROJECT}", "--format", fmt):
        project, _, folder = line.partition("|")
        if project and folder.startswith(prefix):
            found.add(project)
    return found


def remove_projects(projects: set[str]) -> list[str]:
    """Every container, volume and network of these compose projects; what went, one line each."""
    gone = []
    for project in sorted(projects):
        label = f"label={PROJECT}={project}"
        containers = _docker("ps", "-aq", "--filter", label)
        if containers:
            _docker("rm", "-f", "-v", *containers)
        volumes = _docker("volume", "ls", "-q", "--filter", label)
        if volumes:
            _docker("volume", "rm", "-f", *volumes)
        networks = _docker("network", "ls", "-q", "--filter", label)
        if networks:
            _docker("network", "rm", *networks)
        gone.append(f"{project}: {len(containers)} containers, {len(volumes)} volumes, {len(networks)} networks")
    return gone


def processes(prefix: str = PREFIX) -> list[int]:
    """The processes (supervisord and what it runs, servers started by fixtures) whose command line
    names a file under `prefix`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if prefix in cmdline:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"  # a zombie has ended; its parent has yet to reap it


def stop(pids: list[int], grace: float = 10.0) -> None:
    """SIGTERM (supervisord stops what it runs), then SIGKILL whatever is left after `grace` seconds."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.2)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def remove(prefix: str = PREFIX, *, engine: bool) -> list[str]:
    """Stop a finished run's processes and remove its compose projects; what was removed."""
    pids = processes(prefix)
    stop(pids)
    gone = [f"{len(pids)} processes"] if pids else []
    if engine:
        gone += remove_projects(compose_projects(prefix))
    return gone
