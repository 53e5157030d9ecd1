"""Creating the services' own RabbitMQ users where RabbitMQ runs, before any service that needs one
starts: every `up`, so that a service added later gets its user without a restart of RabbitMQ."""

from __future__ import annotations

import contextlib
import tempfile
import time

from mfe_deploy import hub
from mfe_deploy.config.secrets import Secrets
from mfe_deploy.console import Console
from mfe_deploy.exec.command import Command
from mfe_deploy.exec.runner import Runner
from mfe_deploy.runtimes.contract import StartFailed

IMPORT = ("rabbitmqctl", "import_definitions")  # no file: it reads the definitions on its standard input


def create_users(runner: Runner, command: Command, secrets: Secrets, console: Console, timeout: float) -> None:
    """`command`: rabbitmqctl import_definitions wherever RabbitMQ runs (with an exit code that tells:
    `docker exec`, not `compose exec`, whose code is 0 whatever happened on Docker 20.10). The hashes
    travel on its standard input, never in argv or an environment. RabbitMQ answers its health check
    (`ping`) before its application runs, and refuses an import until then: tried again until it takes."""
    if not secrets.hub_users:
        return
    deadline = time.monotonic() + timeout
    with console.status("creating the services' RabbitMQ users") as waiting:
        while True:
            code, why = _feed(runner, command, hub.definitions(secrets).reveal().encode())
            if code == 0:
                return
            if time.monotonic() > deadline:
                raise StartFailed(f"creating the services' RabbitMQ users failed (exit {code}): {why}")
            waiting.update(f"creating the services' RabbitMQ users: RabbitMQ is not ready yet ({why})")
            time.sleep(1)


def _feed(runner: Runner, command: Command, data: bytes) -> tuple[int, str]:
    """Run `command` with `data` on its standard input: its exit code and the last line it printed."""
    with tempfile.TemporaryFile() as err:
        proc = runner.spawn(command, stdin=True, stderr=err)
        assert proc.stdin is not None and proc.stdout is not None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(data)
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
        out = proc.stdout.read()
        proc.stdout.close()
        code = proc.wait(timeout=120)
        err.seek(0)
        text = (err.read() + out).decode(errors="replace")
        lines = [line for line in text.splitlines() if line.strip() and line.strip() != "Error:"]
    return code, (lines[0] if code and lines else "no output")
