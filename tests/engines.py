"""A second Docker engine on this machine, standing in for a remote host's: its own data root, socket
and bridge, started and stopped by whoever needs it (tests, benchmarks)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

STANDINS = (
    "mfe-local/postgres:15",
    "mfe-local/redis:7",
    "mfe-local/rabbitmq:3",
    "mfe-local/nginx:1.22",
    "mfe-local/python:3.11",
)


def engine_answers() -> bool:
    return (
        shutil.which("docker") is not None and subprocess.run(["docker", "info"], capture_output=True).returncode == 0
    )


def require_engine_with_standins() -> None:
    """At the top of a module of docker tests: skip it where no engine answers or the stand-in images
    (images/build.sh) are missing; fail instead when MFE_REQUIRE_DOCKER=1 (CI: they must run)."""
    if engine_answers() and not any(
        subprocess.run(["docker", "image", "inspect", i], capture_output=True).returncode for i in STANDINS
    ):
        return
    if os.environ.get("MFE_REQUIRE_DOCKER") == "1":
        raise RuntimeError("MFE_REQUIRE_DOCKER=1 but no Docker engine or stand-in images (images/build.sh)")
    pytest.skip("no Docker engine with the stand-in images here", allow_module_level=True)


@contextlib.contextmanager
def second_engine() -> Iterator[str]:
    """Yields its DOCKER_HOST (unix://...). Everything it made is removed afterwards."""
    folder = Path("/tmp") / f"mfe-engine-{uuid.uuid4().hex[:8]}"  # short: a unix socket path is limited
    folder.mkdir()
    sock = f"unix://{folder}/docker.sock"
    # Its own bridge: with --bridge=none dockerd deletes the default docker0, which the machine's engine uses.
    bridge = f"mfe{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "link", "add", "name", bridge, "type", "bridge"], check=True)
    subprocess.run(["ip", "addr", "add", "172.31.254.1/24", "dev", bridge], check=True)
    with (folder / "log").open("wb") as log:
        proc = subprocess.Popen(
            [
                "dockerd",
                "--data-root",
                str(folder / "data"),
                "--exec-root",
                str(folder / "exec"),
                "--pidfile",
                str(folder / "pid"),
                "--host",
                sock,
                "--bridge",
                bridge,
                "--iptables=false",
                "--ip-masq=false",
            ],
            stdout=log,
            stderr=log,
        )
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(["docker", "-H", sock, "info"], capture_output=True).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the second dockerd did not start: " + (folder / "log").read_text()[-2000:])
            time.sleep(0.3)
        yield sock
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        subprocess.run(["ip", "link", "delete", bridge], check=False)
        shutil.rmtree(folder, ignore_errors=True)


def remove_images(prefix: str) -> None:
    """Every image of `prefix`/..., so that a build starts from this checkout's code. Their untagged
    parents stay (--no-prune): the modules of the other groups build the same Dockerfile on this engine at
    the same time, and a build reusing a cached step whose image went with ours failed with `No such
    image: sha256:...` (CI: the zero-downtime module's set-up, while a hosts-group module cleaned up)."""
    listed = subprocess.run(
        ["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True, check=True
    )
    ours = [name for name in listed.stdout.split() if name.startswith(prefix + "/")]
    if ours:
        subprocess.run(["docker", "image", "rm", "-f", "--no-prune", *ours], capture_output=True, check=False)


class ContainerLogs:
    """Keeps the logs of every container of a compose project, those that are replaced (and removed)
    during a test included: a failed request's evidence outlives its container. Bounded: it follows
    until the block ends, then stops every `docker logs -f` it started."""

    def __init__(self, project: str, folder: Path) -> None:
        self.project, self.folder = project, folder
        self.followers: dict[str, subprocess.Popen[bytes]] = {}
        self.outputs: list[BinaryIO] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> ContainerLogs:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        time.sleep(0.5)  # the last lines of containers still running
        for follower in self.followers.values():
            follower.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                follower.wait(timeout=5)
        for out in self.outputs:
            out.close()

    def _watch(self) -> None:
        label = f"label=com.docker.compose.project={self.project}"
        while not self.stop.is_set():
            found = subprocess.run(
                ["docker", "ps", "--filter", label, "--format", "{{.ID}} {{.Names}}"],
                capture_output=True,
                text=True,
                check=False,
                timeout=30,
            )
            # By id: compose gives a replacement container the name of the one it replaced.
            for line in found.stdout.splitlines():
                ident, _, name = line.partition(" ")
                if ident and ident not in self.followers:
                    out = (self.folder / f"{name}-{ident}.log").open("ab")
                    self.outputs.append(out)
                    argv = ["docker", "logs", "-f", "--timestamps", ident]
                    self.followers[ident] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
            self.stop.wait(0.3)

    def matching(self, *needles: str, limit: int = 40) -> str:
        """The lines, across every container's log, that hold any of `needles` (a request id, an error)."""
        lines = []
        for path in sorted(self.folder.glob("*.log")):
            for line in path.read_text(errors="replace").splitlines():
                if any(needle in line for needle in needles):
                    lines.append(f"{path.stem}: {line[:400]}")
        return "\n".join(lines[:limit])


def migrations_folder(image: str, service: str = "auth") -> str:
    """Where a service image keeps its migrations (its runner finds them there): a test adds files there."""
    code = f"import mfe_services.migrate as m; print(m.migrations_dir({service!r}))"
    where = ["docker", "run", "--rm", "--entrypoint", "python3", image, "-c", code]
    return subprocess.run(where, capture_output=True, text=True, check=True).stdout.strip()
