"""A real OpenSSH server on loopback for the remote-host tests: its own host key, config, authorized
keys and pid file in a temporary folder; nothing of the machine's ssh setup is touched."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.pg import free_port

SSHD = Path("/usr/sbin/sshd")


def keygen(path: Path, kind: str = "ed25519") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "mfe-test", "-f", str(path)], check=True)
    return path


def fingerprint(public: Path) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(public)], capture_output=True, text=True, check=True
    ).stdout
    return out.split()[1]


@dataclass
class Sshd:
    folder: Path
    port: int
    host_key: Path
    user_key: Path
    proc: subprocess.Popen[bytes] | None = None
    setenv: str = ""  # more KEY=value words for the sessions (e.g. DOCKER_HOST of another engine)
    max_sessions: int = 10  # OpenSSH's default

    def config(self) -> Path:
        cfg = self.folder / "sshd_config"
        # MaxSessions 10 is OpenSSH's default: concurrent dumps and probes must live with what hosts allow.
        cfg.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.host_key}\n"
            f"AuthorizedKeysFile {self.folder / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            f"PidFile {self.folder / 'sshd.pid'}\nLogLevel ERROR\nMaxStartups 50\nMaxSessions {self.max_sessions}\n"
            "Subsystem sftp internal-sftp\n"
            # The remote side runs docker compose: the standalone v2 binary of this venv is on its PATH.
            f"SetEnv PATH={Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin {self.setenv}\n"
        )
        return cfg

    def start(self) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        log = self.folder / "sshd.log"
        with log.open("ab") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(self.config())], stderr=out)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {log.read_text()}")
            with contextlib.suppress(OSError):
                import socket

                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    if s.recv(4).startswith(b"SSH-"):
                        return
            time.sleep(0.1)
        raise RuntimeError("sshd did not answer")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def new_host_key(self) -> None:
        """The host was 'reinstalled': same address, another key."""
        self.stop()
        for suffix in ("", ".pub"):
            Path(str(self.host_key) + suffix).unlink()
        keygen(self.host_key)
        self.start()


@contextlib.contextmanager
def sshd(folder: Path, setenv: str = "", max_sessions: int = 10) -> Iterator[Sshd]:
    folder.mkdir(parents=True, exist_ok=True)
    server = Sshd(
        folder,
        free_port(),
        keygen(folder / "host_ed25519"),
        keygen(folder / "user_ed25519"),
        setenv=setenv,
        max_sessions=max_sessions,
    )
    (folder / "authorized_keys").write_text(Path(str(server.user_key) + ".pub").read_text())
    server.start()
    try:
        yield server
    finally:
        server.stop()
