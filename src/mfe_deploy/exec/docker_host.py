"""A Runner whose docker commands talk to one given engine (DOCKER_HOST: unix://, ssh://, tcp://)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import IO

from mfe_deploy.exec.command import Command
from mfe_deploy.exec.runner import Completed, Process, Runner


@dataclass(frozen=True)
class AtEngine:
    runner: Runner
    url: str

    def _at(self, command: Command) -> Command:
        return dataclasses.replace(command, env={**command.env, "DOCKER_HOST": self.url})

    def run(self, command: Command, *, timeout: float | None = None) -> Completed:
        return self.runner.run(self._at(command), timeout=timeout)

    def spawn(self, command: Command, *, stdin: bool = False, stderr: IO[bytes] | None = None) -> Process:
        return self.runner.spawn(self._at(command), stdin=stdin, stderr=stderr)

    def attach(self, command: Command) -> int:
        return self.runner.attach(self._at(command))
