"""Run Commands as local processes (no shell: argv only)."""

from __future__ import annotations

import os
import subprocess

from mfe_deploy.command import Command
from mfe_deploy.errors import CommandFailed
from mfe_deploy.runtimes import Completed


class LocalProcess:
    def run(self, command: Command, *, timeout: float | None = None) -> Completed:
        try:
            proc = subprocess.run(
                command.argv, env={**os.environ, **command.environ()}, cwd=command.cwd,
                capture_output=True, text=True, timeout=timeout, check=False,
            )  # fmt: skip
        except FileNotFoundError:
            raise CommandFailed(f"{command.argv[0]}: not found") from None
        except subprocess.TimeoutExpired:
            raise CommandFailed(f"timed out after {timeout:.0f}s: {command}") from None
        return Completed(proc.returncode, proc.stdout, proc.stderr)
