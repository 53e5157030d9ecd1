"""Connections to remote hosts with paramiko. Host keys are verified against known_hosts, always: an
unknown key is refused with the command that trusts it, a changed key is refused, full stop.

Every connection problem becomes a one-line RemoteError naming the host and the cause."""

from __future__ import annotations

import os
import shlex
import socket
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from mfe_deploy.errors import MfeError
from mfe_deploy.exec.command import Command
from mfe_deploy.exec.runner import Completed
from mfe_deploy.remote.target import SshTarget, fingerprint

if TYPE_CHECKING:
    import paramiko

    from mfe_deploy.exec.host import Host


class RemoteError(MfeError):
    exit_code = 1


class HostKeyError(RemoteError):
    exit_code = 1


def _refuse_unknown(target: SshTarget, env_name: str) -> Any:
    import paramiko

    class Refuse(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
            raise HostKeyError(
                f"{target.address}: unknown host key ({key.get_name()} {fingerprint(key.asbytes())}), refused; "
                f"if that fingerprint is the host's, trust it with `mfe-deploy hosts trust --env {env_name}`"
            )

    return Refuse()


def _quiet() -> None:
    """paramiko logs transport failures from its own thread; ours are reported once, as one line."""
    import logging

    logger = logging.getLogger("paramiko")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
        logger.propagate = False


def _why(exc: BaseException) -> str:
    """An exception as the cause in a one-line error (some of paramiko's have no message)."""
    return str(exc) or type(exc).__name__


def connect(target: SshTarget, env_name: str) -> paramiko.SSHClient:
    import paramiko

    _quiet()
    client = paramiko.SSHClient()
    if target.known_hosts.exists():
        try:
            client.load_host_keys(str(target.known_hosts))
        except (OSError, paramiko.SSHException) as exc:
            raise RemoteError(f"{target.known_hosts}: cannot read known hosts: {exc}") from None
    client.set_missing_host_key_policy(_refuse_unknown(target, env_name))
    try:
        client.connect(
            target.host,
            port=target.port,
            username=target.user,
            key_filename=str(target.identity_file) if target.identity_file else None,
            allow_agent=target.identity_file is None,
            look_for_keys=target.identity_file is None,
            timeout=target.connect_timeout,
            banner_timeout=target.connect_timeout,
            auth_timeout=target.connect_timeout,
            channel_timeout=target.connect_timeout,
        )
    except HostKeyError:
        client.close()
        raise
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise HostKeyError(
            f"{target.address}: the host key CHANGED ({exc.key.get_name()} {fingerprint(exc.key.asbytes())}, "
            f"known_hosts has {fingerprint(exc.expected_key.asbytes())}), refused: this may be an attack; if the "
            f"host was reinstalled, remove the old key from {target.known_hosts} and trust the new one"
        ) from None
    except paramiko.AuthenticationException:
        client.close()
        how = f"key {target.identity_file}" if target.identity_file else "the agent's and default keys"
        raise RemoteError(f"{target.address}: authentication failed as {target.user} ({how})") from None
    except TimeoutError:
        client.close()
        raise RemoteError(f"{target.address}: connection timed out after {target.connect_timeout:g}s") from None
    except paramiko.ssh_exception.NoValidConnectionsError as exc:
        client.close()
        refused = all(isinstance(e, ConnectionRefusedError) for e in exc.errors.values())
        why = "connection refused" if refused else str(exc)
        raise RemoteError(f"{target.address}: {why}") from None
    except (OSError, paramiko.SSHException) as exc:
        client.close()
        text = str(exc)
        if "banner" in text or text == "No existing session":
            text = f"no SSH answer within {target.connect_timeout:g}s (is it an SSH server?)"
        raise RemoteError(f"{target.address}: {text or _why(exc)}") from None
    return client


def scan(target: SshTarget) -> paramiko.PKey:
    """The host's key, read without authenticating (for `hosts trust`)."""
    import paramiko

    _quiet()
    try:
        sock = socket.create_connection((target.host, target.port), timeout=target.connect_timeout)
    except TimeoutError:
        raise RemoteError(f"{target.address}: connection timed out after {target.connect_timeout:g}s") from None
    except OSError as exc:
        raise RemoteError(f"{target.address}: {exc.strerror or exc}") from None
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=target.connect_timeout)
        return transport.get_remote_server_key()
    except paramiko.SSHException as exc:
        raise RemoteError(f"{target.address}: {exc}") from None
    finally:
        transport.close()


def known_key(target: SshTarget) -> paramiko.PKey | None:
    import paramiko

    if not target.known_hosts.exists():
        return None
    keys = paramiko.HostKeys(str(target.known_hosts))
    found = keys.lookup(target.known_hosts_name)
    if not found:
        return None
    return next(iter(found.values()))


def trust(target: SshTarget, key: paramiko.PKey) -> None:
    """Append the host's key to known_hosts (created 0600 in a 0700 folder)."""
    target.known_hosts.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    line = f"{target.known_hosts_name} {key.get_name()} {key.get_base64()}\n"
    fd = os.open(target.known_hosts, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as handle:
        handle.write(line)


# --- commands on the remote host ---------------------------------------------------------------------------
ENV_PRELUDE = 'while IFS= read -r kv && [ -n "$kv" ]; do export "$kv"; done; exec "$@"'


def remote_line(command: Command) -> str:
    """The shell line run on the remote host. Variables (secrets among them) never appear in it: they are
    sent first on stdin, one KEY=value line each, and exported by a small prelude (sshd's AcceptEnv is
    usually off, and argv is visible to every user of the host)."""
    argv = shlex.join(command.argv)
    if command.env:
        argv = f"sh -c {shlex.quote(ENV_PRELUDE)} sh {argv}"
    return f"cd {shlex.quote(str(command.cwd))} && {argv}" if command.cwd else argv


def _env_block(command: Command) -> bytes:
    if not command.env:
        return b""
    return "".join(f"{k}={v}\n" for k, v in command.environ().items()).encode() + b"\n"


class RemoteProcess:
    """A command running on the remote host, shaped like subprocess.Popen where the backups use it."""

    def __init__(self, channel: paramiko.Channel, stderr: IO[bytes] | None) -> None:
        from mfe_deploy.remote import streams

        self.channel = channel
        self.stdin: IO[bytes] | None = streams.Stdin(channel, "wb")  # type: ignore[assignment]
        self.stdout: IO[bytes] | None = streams.Stdout(channel, "rb")  # type: ignore[assignment]
        self.returncode: int | None = None
        self._stderr = stderr
        self._pump = threading.Thread(target=self._drain, daemon=True)
        self._pump.start()

    def _drain(self) -> None:
        from mfe_deploy.remote import streams

        with streams.Stderr(self.channel, "rb") as err:
            for chunk in iter(lambda: err.read(65536), b""):
                if self._stderr is not None:
                    self._stderr.write(chunk)

    def poll(self) -> int | None:
        if self.returncode is None and self.channel.exit_status_ready():
            self.returncode = self.channel.recv_exit_status()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self.channel.recv_exit_status()
            self._pump.join(timeout=5)
        return self.returncode

    def kill(self) -> None:
        self.channel.close()
        if self.returncode is None:
            self.returncode = -9


# OpenSSH's MaxSessions defaults to 10 channels per connection; SFTP takes one, one is kept spare for a
# killed command whose remote process has not exited yet. More concurrent commands get another connection.
CHANNELS_PER_CONNECTION = 8


@dataclass
class _Connection:
    client: paramiko.SSHClient
    limit: int
    channels: list[paramiko.Channel] = field(default_factory=list)
    opening: int = 0  # channels reserved by a thread that is opening them
    # One open at a time: paramiko keeps an open's failure in one slot per transport, so with two opens
    # in flight a refusal may reach the wrong thread, and the other sees "Unable to open channel."
    serial: threading.Lock = field(default_factory=threading.Lock)

    def busy(self) -> int:
        """Channels still open (the server closes one when its command ended and its output was sent)."""
        self.channels = [c for c in self.channels if not c.closed]
        return len(self.channels) + self.opening


class SshRunner:
    """Runs Commands on the remote host, a channel per command, over as few connections as the host's
    session limit allows (concurrent dumps and probes may need more than one)."""

    def __init__(
        self,
        client: paramiko.SSHClient,
        target: SshTarget,
        env_name: str = "",
        *,
        channels: int = CHANNELS_PER_CONNECTION,
    ) -> None:
        self.target = target
        self.env_name = env_name
        self._per_connection = channels
        self._lock = threading.Lock()
        self._connecting = threading.Lock()
        self._connections = [_Connection(client, channels)]

    @property
    def connections(self) -> int:
        return len(self._connections)

    def close(self) -> None:
        """Close the extra connections (the first one belongs to whoever passed it in)."""
        with self._lock:
            extra, self._connections = self._connections[1:], self._connections[:1]
        for conn in extra:
            conn.client.close()

    def _connection(self) -> _Connection:
        """A connection with a free channel, reserved for the caller (who opens it or gives it back). One
        thread at a time connects, so that callers arriving together share the new connection."""
        if conn := self._reserve():
            return conn
        with self._connecting:
            if conn := self._reserve():
                return conn
            conn = _Connection(connect(self.target, self.env_name), self._per_connection, opening=1)
            with self._lock:
                self._connections.append(conn)
            return conn

    def _reserve(self) -> _Connection | None:
        with self._lock:
            for conn in self._connections:
                if conn.busy() < conn.limit:
                    conn.opening += 1
                    return conn
        return None

    def _open(self) -> paramiko.Channel:
        import paramiko

        for _ in range(20):
            conn = self._connection()
            channel = None
            try:
                transport = conn.client.get_transport()
                if transport is None or not transport.is_active():
                    raise RemoteError(f"{self.target.address}: the connection was lost")
                with conn.serial:
                    channel = transport.open_session(timeout=self.target.connect_timeout)
            except paramiko.ChannelException:
                # The host allows fewer sessions than assumed (or a killed one lingers): this connection is full.
                with self._lock:
                    conn.limit = min(conn.limit, conn.busy() - 1)
                    hopeless = conn.limit == 0 and conn is not self._connections[0]  # a fresh one refused too
                if hopeless:
                    break
                continue
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise RemoteError(f"{self.target.address}: cannot open a session: {_why(exc)}") from None
            finally:
                with self._lock:
                    conn.opening -= 1
                    if channel is not None:
                        conn.channels.append(channel)
            return channel
        raise RemoteError(f"{self.target.address}: the host refuses new sessions (see MaxSessions in sshd_config)")

    def _channel(self, command: Command, timeout: float | None) -> paramiko.Channel:
        import paramiko

        channel = self._open()
        try:
            channel.settimeout(timeout)
            channel.exec_command(remote_line(command))
            block = _env_block(command)
            if block:
                channel.sendall(block)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            channel.close()
            raise RemoteError(f"{self.target.address}: cannot start `{command.argv[0]}`: {_why(exc)}") from None
        return channel

    def run(self, command: Command, *, timeout: float | None = None) -> Completed:
        if command.input is not None:
            raise RemoteError(f"{self.target.address}: a command with its input over SSH is not there yet: {command}")
        channel = self._channel(command, timeout)
        channel.shutdown_write()
        out: list[bytes] = []
        err: list[bytes] = []
        from mfe_deploy.remote import streams

        reader = threading.Thread(target=lambda: err.append(streams.Stderr(channel, "rb").read()), daemon=True)
        reader.start()
        try:
            out.append(streams.Stdout(channel, "rb").read())
            code = channel.recv_exit_status()
        except TimeoutError:
            channel.close()
            raise RemoteError(f"{self.target.address}: timed out after {timeout:.0f}s: {command}") from None
        reader.join(timeout=5)
        channel.close()
        return Completed(code, b"".join(out).decode(errors="replace"), b"".join(err).decode(errors="replace"))

    def spawn(self, command: Command, *, stdin: bool = False, stderr: IO[bytes] | None = None) -> RemoteProcess:
        channel = self._channel(command, None)
        if not stdin:
            channel.shutdown_write()
        return RemoteProcess(channel, stderr)

    def attach(self, command: Command) -> int:
        raise RemoteError(f"{self.target.address}: commands on this terminal over SSH are not there yet: {command}")


@contextmanager
def session(target: SshTarget, env_name: str) -> Iterator[SshRunner]:
    client = connect(target, env_name)
    runner = SshRunner(client, target, env_name)
    try:
        yield runner
    finally:
        runner.close()
        client.close()


def open_host(target: SshTarget, env_name: str, resources: ExitStack) -> Host:
    """A connected remote Host: commands over SSH channels, files over SFTP, under the environment's
    remote folder. The connection closes with `resources`."""
    from mfe_deploy.exec.host import Host, remote_root
    from mfe_deploy.remote.sftp import SftpFiles

    client = connect(target, env_name)
    resources.callback(client.close)
    try:
        sftp = client.open_sftp()
        home = sftp.normalize(".")
    except (OSError, EOFError) as exc:
        raise RemoteError(f"{target.address}: SFTP is not available: {_why(exc)}") from None
    root = remote_root(home, target.remote_dir)
    runner = SshRunner(client, target, env_name)
    resources.callback(runner.close)
    return Host(target.address, runner, SftpFiles(sftp), root, remote=True)
