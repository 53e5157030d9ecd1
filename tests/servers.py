"""Real Redis and RabbitMQ servers for tests: private ports, data and config under a temp folder."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import REPO
from tests.pg import free_port

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")


def wait_until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout}s")


@dataclass
class Server:
    port: int
    process: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)


@dataclass
class Redis(Server):
    binary: str = "redis-server"
    folder: Path = Path()

    def start(self) -> None:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.folder),
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cli = shutil.which("redis-cli")

        def pong() -> bool:
            if cli is None:
                time.sleep(0.5)
                return True
            return (
                subprocess.run([cli, "-p", str(self.port), "ping"], capture_output=True, text=True).stdout.strip()
                == "PONG"
            )

        wait_until(pong, 10, "redis")


@contextmanager
def redis_server(port: int | None = None) -> Iterator[Redis]:
    binary = shutil.which("redis-server")
    assert binary, "redis-server not found: run scripts/setup-system"
    folder = Path(tempfile.mkdtemp(prefix="mfe-redis-"))
    server = Redis(port=port or free_port(), binary=binary, folder=folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class RabbitMQ(Server):
    user: str = "mfe"
    password: str = ""
    folder: Path = Path()

    def environ(self) -> dict[str, str]:
        return {
            **os.environ,
            "RABBITMQ_CONFIG_FILE": str(self.folder / "rabbitmq"),
            "RABBITMQ_NODENAME": f"mfetest{self.port}@localhost",
            "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.folder / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.folder / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.folder / "pid"),
            "RABBITMQ_DIST_PORT": str(self.port + 20000 if self.port < 45000 else self.port - 20000),
            "HOME": str(self.folder),
        }

    def ctl(self, *args: str, stdin: str | None = None) -> None:
        """rabbitmqctl against this node; `stdin`: what it reads there (import_definitions, as the runtimes)."""
        argv = [str(RABBIT_BIN / "rabbitmqctl"), *args]
        done = subprocess.run(argv, input=stdin, text=True, env=self.environ(), capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr

    def start(self) -> None:
        with open(self.folder / "out.log", "wb") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [str(RABBIT_BIN / "rabbitmq-server")],
                env=self.environ(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        def booted() -> bool:  # `ping` answers before the AMQP listener is open; await_startup does not
            probe = [str(RABBIT_BIN / "rabbitmqctl"), "-q", "await_startup", "--timeout", "5"]
            return subprocess.run(probe, env=self.environ(), capture_output=True).returncode == 0

        wait_until(booted, 60, "rabbitmq")

    def stop(self) -> None:
        subprocess.run(
            [str(RABBIT_BIN / "rabbitmqctl"), "shutdown"], env=self.environ(), capture_output=True, timeout=60
        )
        super().stop()


@contextmanager
def rabbitmq_server(password: str, port: int | None = None) -> Iterator[RabbitMQ]:
    assert (RABBIT_BIN / "rabbitmq-server").exists(), "rabbitmq-server not found: run scripts/setup-system"
    folder = Path(tempfile.mkdtemp(prefix="mfe-rabbit-"))
    server = RabbitMQ(port=port or free_port(), password=password, folder=folder)
    (folder / "rabbitmq.conf").write_text(
        f"listeners.tcp.default = 127.0.0.1:{server.port}\ndefault_user = {server.user}\n"
        f"default_pass = {password}\nloopback_users = none\n"
    )
    (folder / "enabled_plugins").write_text("[].\n")
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def serve_process(args: list[str], port: int, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Starts a server process (the repo on its PYTHONPATH) and waits until it accepts connections."""
    with log.open("wb") as out:
        process = subprocess.Popen(args, env={**os.environ, "PYTHONPATH": str(REPO), **env}, stdout=out, stderr=out)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{args} did not listen: {log.read_text()}")
