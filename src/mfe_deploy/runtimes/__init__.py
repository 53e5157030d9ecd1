"""Runtimes execute Commands somewhere: this machine, a container, a remote host."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from mfe_deploy.command import Command


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


class Runner(Protocol):
    def run(self, command: Command, *, timeout: float | None = None) -> Completed: ...
