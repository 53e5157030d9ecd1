"""Run Commands as local processes (no shell: argv only)."""

from __future__ import annotations

import os
import subprocess
from typing import IO

from mfe_deploy.errors import CommandFailed
from mfe_deploy.exec.command import Command
from mfe_deploy.exec.runner import Completed
from mfe_deploy.exec.secret import Secret


def _environ(command: Command) -> dict[str, str]:
    return {**os.environ, **command.environ()} if command.inherit else command.environ()


class LocalProcess:
    def run(self, command: Command, *, timeout: float | None = None) -> Completed:
        try:
            proc = subprocess.run(
                command.argv,
                env=_environ(command),
                cwd=command.cwd,
                input=command.input.reveal() if isinstance(command.input, Secret) else command.input,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError:
            raise CommandFailed(f"{command.argv[0]}: not found") from None
        except subprocess.TimeoutExpired:
            raise CommandFailed(f"timed out after {timeout:.0f}s: {command}") from None
        return Completed(proc.returncode, proc.stdout, proc.stderr)

    def spawn(
        self, command: Command, *, stdin: bool = False, stderr: IO[bytes] | None = None
    ) -> subprocess.Popen[bytes]:
        """A running process with a binary stdout pipe (and stdin pipe): for streams too large to buffer."""
        try:
            return subprocess.Popen(
                command.argv,
                env=_environ(command),
                cwd=command.cwd,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr if stderr is not None else subprocess.PIPE,
            )
        except FileNotFoundError:
            raise CommandFailed(f"{command.argv[0]}: not found") from None

    def attach(self, command: Command) -> int:
        try:
            return subprocess.run(command.argv, env=_environ(command), cwd=command.cwd, check=False).returncode
        except OSError as exc:
            raise CommandFailed(f"{command.argv[0]}: {exc.strerror}") from None
