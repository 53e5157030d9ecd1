"""A throwaway PostgreSQL cluster for tests, from the server binaries on the machine.

PostgreSQL refuses to run as root; as root (CI) the cluster runs as `nobody` in a folder it owns.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def bindir() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if candidates:
        return candidates[-1]
    found = shutil.which("initdb")
    assert found, "PostgreSQL server binaries not found: run scripts/setup-system"
    return Path(found).resolve().parent


_HANDED_OUT: set[int] = set()
# scripts/test runs groups of tests side by side (tests/groups.py), each with its own range of ports below the kernel's
# ephemeral range (MFE_TEST_PORTS=LOW-HIGH): a port one group holds can never be another's, nor one the
# kernel hands to a client socket or to bind(0). Without it (one pytest alone), any port the kernel offers.
_RANGE = os.environ.get("MFE_TEST_PORTS", "")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))  # noqa: S104 - the widest bind: free on every address, loopback included
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port free now and never handed out before in this run: the kernel readily gives a just-closed
    ephemeral port again, and two services of one environment on one port is a config error."""
    if _RANGE:
        low, high = (int(part) for part in _RANGE.split("-"))
        for port in range(low, high + 1):
            if port not in _HANDED_OUT and _bindable(port):
                _HANDED_OUT.add(port)
                return port
        raise RuntimeError(f"MFE_TEST_PORTS={_RANGE}: every port of the range is taken")
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


@dataclass(frozen=True)
class Cluster:
    bin: Path
    port: int
    socket_dir: Path
    data: Path
    as_user: tuple[str, ...]

    def _ctl(self, *args: str) -> None:
        opts = f"-k {self.socket_dir} -p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            [
                *self.as_user,
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-o",
                opts,
                "-l",
                str(self.data.parent / "log"),
                "-w",
                *args,
            ],
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        self._ctl("start")

    def stop(self) -> None:
        self._ctl("-m", "immediate", "stop")

    def psql(
        self,
        *args: str,
        user: str = "postgres",
        dbname: str = "postgres",
        password: str | None = None,
        env: Mapping[str, str] | None = None,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """As the superuser over the socket (trust); as any other role over TCP with its password."""
        host = str(self.socket_dir) if password is None else "127.0.0.1"
        full_env = {**os.environ, **(env or {}), "PGPASSWORD": password or ""}
        return subprocess.run(
            [
                str(self.bin / "psql"),
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                host,
                "-p",
                str(self.port),
                "-U",
                user,
                "-d",
                dbname,
                *args,
            ],
            capture_output=True,
            text=True,
            env=full_env,
            input=stdin,
            timeout=60,
            check=False,
        )


@contextmanager
def temp_cluster() -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="mfe-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "nobody", "nogroup")
        as_user = ["runuser", "-u", "nobody", "--"]
    pg, data, sock, port = bindir(), root / "data", root / "sock", free_port()
    try:
        subprocess.run([*as_user, "mkdir", str(sock)], check=True)
        subprocess.run(
            [
                *as_user,
                str(pg / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
        )
        cluster = Cluster(bin=pg, port=port, socket_dir=sock, data=data, as_user=tuple(as_user))
        cluster.start()
        yield cluster
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                [*as_user, str(pg / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                check=False,
                capture_output=True,
            )
        shutil.rmtree(root, ignore_errors=True)
