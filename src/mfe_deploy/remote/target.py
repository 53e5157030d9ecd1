"""An environment's remote target as a value: who, where, which keys. Pure."""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from mfe_deploy.config.models import Environment

_TARGET = re.compile(r"^ssh://(?P<user>[A-Za-z0-9._-]+)@(?P<host>[A-Za-z0-9.-]+)(:(?P<port>[0-9]{1,5}))?$")


@dataclass(frozen=True)
class SshTarget:
    user: str
    host: str
    port: int
    identity_file: Path | None
    known_hosts: Path
    remote_dir: str  # absolute, or relative to the remote user's home
    connect_timeout: float

    @property
    def address(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        """How OpenSSH (and paramiko) name the host in known_hosts."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


def parse(env: Environment, project_dir: Path, home: Path) -> SshTarget | None:
    """None for a local target."""
    match = _TARGET.match(env.target)
    if match is None:
        return None
    ssh = env.ssh

    def local_path(value: str | None) -> Path | None:
        if value is None:
            return None
        path = Path(value).expanduser()
        return path if path.is_absolute() else project_dir / path

    return SshTarget(
        user=match["user"],
        host=match["host"],
        port=int(match["port"] or 22),
        identity_file=local_path(ssh.identity_file),
        known_hosts=local_path(ssh.known_hosts) or home / ".ssh" / "known_hosts",
        remote_dir=ssh.remote_dir or f"mfe-deploy/{env.project}-{env.name}",
        connect_timeout=ssh.connect_timeout,
    )


def fingerprint(key_bytes: bytes) -> str:
    """OpenSSH's SHA256 fingerprint of a public key blob."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key_bytes).digest()).decode().rstrip("=")
