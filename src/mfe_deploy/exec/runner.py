"""Running Commands somewhere: this machine, a container, a remote host."""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, Protocol

from mfe_deploy.exec.command import Command


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


class Process(Protocol):
    """A running command with binary pipes: subprocess.Popen, or a command on a remote host."""

    @property
    def stdin(self) -> IO[bytes] | None: ...

    @property
    def stdout(self) -> IO[bytes] | None: ...

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def kill(self) -> None: ...


class Runner(Protocol):
    def run(self, command: Command, *, timeout: float | None = None) -> Completed: ...

    def spawn(self, command: Command, *, stdin: bool = False, stderr: IO[bytes] | None = None) -> Process: ...

    def attach(self, command: Command) -> int:
        """Runs the command on this terminal (its stdin, stdout and stderr: a shell, a one-off command the
        operator watches) and returns its exit status."""
        ...
