"""Runtimes execute Commands somewhere: this machine, a container, a remote host."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import IO, Protocol

from mfe_deploy.command import Command


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


class Runner(Protocol):
    def run(self, command: Command, *, timeout: float | None = None) -> Completed: ...

    def spawn(
        self, command: Command, *, stdin: bool = False, stderr: IO[bytes] | None = None
    ) -> subprocess.Popen[bytes]: ...
