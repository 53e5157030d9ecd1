"""Creating the services' own RabbitMQ users where RabbitMQ runs, before any service that needs one
starts: every `up`, so that a service added later gets its user without a restart of RabbitMQ."""

from __future__ import annotations

import contextlib
import tempfile

from mfe_deploy import hub
from mfe_deploy.config.secrets import Secrets
from mfe_deploy.console import Console
from mfe_deploy.exec.command import Command
from mfe_deploy.exec.runner import Runner
from mfe_deploy.runtimes.contract import StartFailed

IMPORT = ("rabbitmqctl", "import_definitions")  # no file: it reads the definitions on its standard input


def create_users(runner: Runner, command: Command, secrets: Secrets, console: Console) -> None:
    """`command`: rabbitmqctl import_definitions wherever RabbitMQ runs. The passwords' hashes travel on
    its standard input, never in argv or an environment."""
    if not secrets.hub_users:
        return
    with console.status("creating the services' RabbitMQ users"), tempfile.TemporaryFile() as err:
        proc = runner.spawn(command, stdin=True, stderr=err)
        assert proc.stdin is not None and proc.stdout is not None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(hub.definitions(secrets).reveal().encode())
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
        proc.stdout.read()
        proc.stdout.close()
        code = proc.wait(timeout=120)
        err.seek(0)
        why = err.read().decode(errors="replace").strip().splitlines()
    if code != 0:
        raise StartFailed(f"creating the services' RabbitMQ users failed (exit {code}): {(why or ['no output'])[-1]}")
