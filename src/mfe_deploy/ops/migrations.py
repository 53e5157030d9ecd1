"""Migrations as commands: build the runner's command line per service, parse its JSON answer.

The runner (`python -m mfe_services.migrate`) ships with the services, so it runs wherever they do
(a local venv, a one-off container). Credentials travel in the environment, never in argv.
"""

from __future__ import annotations

import hashlib
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mfe_deploy.config import urls
from mfe_deploy.config.models import Environment, Service
from mfe_deploy.config.secrets import Secrets
from mfe_deploy.errors import ConfigError, Problem
from mfe_deploy.exec.command import Command
from mfe_deploy.exec.runner import Completed, Runner
from mfe_deploy.exec.secret import Secret


@dataclass(frozen=True)
class Outcome:
    service: str
    ok: bool
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def error(self) -> str:
        err = self.data.get("error") or {}
        return str(err.get("message", "unknown error"))


def services(env: Environment, only: str | None) -> list[str]:
    if only is None:
        return env.database_services
    if only not in env.database_services:
        known = ", ".join(env.database_services)
        raise ConfigError([Problem("--service", None, "", f"{only!r} has no database; one of: {known}")])
    return [only]


def runner_args(env_name: str, service: str, action: list[str]) -> tuple[str, ...]:
    """The migration runner's arguments after the interpreter: the one place its command line is written."""
    return ("-m", "mfe_services.migrate", "--service", service, "--env-name", env_name, *action)


def nothing(service: str) -> Outcome:
    """A service of yours without a migrations folder: nothing applied, nothing pending."""
    return Outcome(service, True, {"applied": [], "migrations": [], "pending": []})


def command(
    env: Environment,
    secrets: Secrets,
    service: str,
    action: list[str],
    *,
    host: str = "127.0.0.1",
    python: str = sys.executable,
    project_dir: Path | None = None,
) -> Command:
    """The bundled runner; for a service of yours, pointed at its migrations folder (MFE_MIGRATIONS_FOLDER)."""
    argv = (python, *runner_args(env.name, service, action))
    variables: dict[str, str | Secret] = {"DATABASE_URL": urls.database_url(env, secrets, service, host)}
    svc = env.services[service]
    if not svc.bundled and svc.migrations is not None:
        variables["MFE_MIGRATIONS_FOLDER"] = str((project_dir or Path.cwd()) / svc.migrations.path)
    return Command(argv=argv, env=variables)


def folder_digest(project_dir: Path, svc: Service) -> str:
    """What a service's own migrations folder holds (bundled services' migrations ship in their image)."""
    if svc.bundled or svc.migrations is None:
        return ""
    digest = hashlib.sha256()
    for path in sorted((project_dir / svc.migrations.path).glob("*.sql")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def parse(service: str, done: Completed) -> Outcome:
    try:
        data = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else {}
    except (json.JSONDecodeError, IndexError):
        data = {}
    if not isinstance(data, dict) or not data:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return Outcome(service, False, {"error": {"kind": "runner", "message": f"migration runner failed: {tail}"}})
    return Outcome(service, done.returncode == 0 and "error" not in data, data)


def run(runner: Runner, commands: dict[str, Command], timeout: float = 300) -> list[Outcome]:
    """Each service has its own database and lock, so the services migrate concurrently."""
    with ThreadPoolExecutor(max_workers=len(commands) or 1) as pool:
        futures = {name: pool.submit(runner.run, cmd, timeout=timeout) for name, cmd in commands.items()}
        return [parse(name, future.result()) for name, future in futures.items()]


def applied(outcomes: list[Outcome]) -> tuple[list[str], dict[str, str]]:
    """After a deploy's migrations: the failures (empty when all went well), and each service's schema head
    (its newest applied migration, by this deploy or before it; the runner's `head`)."""
    failures = [f"{o.service}: {o.error}" for o in outcomes if not o.ok]
    if failures:
        return failures, {}
    heads = {}
    for o in outcomes:
        applied = o.data.get("applied", [])
        # the runner's `head`: the schema's newest, applied now or found applied (an adopted database); a
        # runner older than `head` names only what it applied
        head = o.data.get("head") or (applied[-1]["id"] if applied else None)
        if head:
            heads[o.service] = str(head)
    return [], heads


def describe(outcomes: list[Outcome]) -> list[str]:
    return [f"{o.service}: applied {item['id']}" for o in outcomes for item in o.data.get("applied", [])]


def pending(outcomes: list[Outcome]) -> dict[str, tuple[str, ...]]:
    """From `status` outcomes: each service's migrations not applied yet."""
    return {
        o.service: tuple(str(m["id"]) for m in o.data.get("migrations", []) if m.get("state") == "pending")
        for o in outcomes
        if o.ok
    }
