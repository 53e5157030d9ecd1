"""What every command builds on: the environment's runtime (picked by the registry, never by a type
check), and the one wrapper every mutating command goes through (the deploy lock and the audit log)."""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mfe_deploy.cli.app import application, host

if TYPE_CHECKING:
    from collections.abc import Iterator

    from mfe_deploy.calendar import Timer
    from mfe_deploy.runtimes.contract import Runtime

RuntimeOption = Annotated[
    str | None, typer.Option("--runtime", "-r", help="local, docker or swarm [default: from the environment].")
]
LockWait = Annotated[float, typer.Option("--lock-wait", help="Seconds to wait for the deploy lock.")]
ForceUnlock = Annotated[bool, typer.Option("--force-unlock", help="Break a stale deploy lock.")]


def runtime(env: str, wanted: str | None = None) -> Runtime:
    """The environment's runtime. Its secrets are resolved only when a step needs one."""
    from mfe_deploy.engine import server_version
    from mfe_deploy.errors import MfeError, UsageError
    from mfe_deploy.runtimes import registry
    from mfe_deploy.runtimes.contract import Deployment

    state = application()
    loaded = state.environment(env)
    remote = loaded.env.target != "local"
    try:  # before connecting: a wrong --runtime for a remote target is refused without touching the host
        name, why = registry.choose(wanted or loaded.env.runtime, remote=remote, engine=server_version)
    except UsageError:
        raise
    except MfeError as exc:
        raise MfeError(f"{env} targets {loaded.env.target}: {exc}") from None
    where = host(env, loaded.env)  # connected once: the lock and the audit log of this command use it too
    if why:
        state.console.info(f"runtime: {name} ({why})")
    return registry.create(
        name, Deployment(state.project_dir, loaded, state.console, where, lambda: state.secrets(env))
    )


def audited(env: str, action: str, details: dict[str, object]) -> AbstractContextManager[dict[str, object]]:
    """One audit record for the action, whatever its outcome (its notifications sent), without the deploy
    lock; the record is yielded so the action can add to it."""
    from mfe_deploy.exec.host import AUDIT
    from mfe_deploy.state import audit

    where = host(env)
    return audit.audited(where.files, where.state / AUDIT, action, env, dict(details), application().notify_outcome)


@contextmanager
def mutating(
    env: str, action: str, details: dict[str, object], *, wait: float = 0, force: bool = False, lock: bool = True
) -> Iterator[dict[str, object]]:
    """Hold the deploy lock (unless `lock` is False: releasing the lock itself) and write one audit
    record for the action, whatever its outcome; the record is yielded so the action can add to it."""
    from mfe_deploy.exec.host import DEPLOY_LOCK
    from mfe_deploy.state import lock as locks

    where = host(env)
    command = " ".join(["mfe-deploy", *sys.argv[1:]])
    breaking = lock and force and where.files.read_text(where.state / DEPLOY_LOCK) is not None
    with ExitStack() as stack:
        record = stack.enter_context(audited(env, action, details))
        if lock:
            stack.enter_context(
                locks.held(where.files, where.state / DEPLOY_LOCK, command, wait=wait, force_unlock=force)
            )
        if breaking:
            lock_broken(env, f"--force-unlock by {command}")
        yield record


def lock_broken(env: str, how: str) -> None:
    from mfe_deploy.notify import Event

    application().notify(env, Event("lock.broken", env, f"the deploy lock of {env} was broken ({how})"))


def confirm_loss(env: str, question: str, *, yes: bool, force: bool) -> None:
    """Before a command that can lose data: production wants --force; anyone is asked, unless --yes (and a
    run with no terminal to ask on is refused, saying so)."""
    from mfe_deploy.errors import MfeError

    if application().environment(env).env.tier == "production" and not force:
        raise MfeError(f"{question.rstrip('?')}: refused in production without --force")
    if yes:
        return
    if not sys.stdin.isatty():
        raise MfeError(f"{question.rstrip('?')}: this can lose data; confirm with --yes when not running interactively")
    typer.confirm(question, abort=True)


YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
ForceOption = Annotated[bool, typer.Option("--force", help="Required in production.")]


InstallOption = Annotated[bool, typer.Option("--install", help="Write the file(s) into --dest.")]
DestOption = Annotated[Path | None, typer.Option("--dest", help="[/etc/cron.d or /etc/systemd/system]")]
SecretsFileOption = Annotated[
    Path | None, typer.Option("--env-file", help="KEY=value file the scheduled runs read their secrets from.")
]


def this_program() -> tuple[str, ...]:
    """How a cron line or a systemd unit starts this tool: its script, or this Python with -m."""
    import shutil

    script = shutil.which("mfe-deploy")
    return (script,) if script else (sys.executable, "-m", "mfe_deploy")


SystemdOption = Annotated[bool, typer.Option("--systemd", help="A systemd service and timer instead of cron.")]


def show_timer(timer: Timer, *, systemd: bool, install: bool, dest: Path | None) -> None:
    """A recurring run's cron file or systemd units, printed or installed (show_or_install)."""
    from mfe_deploy import calendar

    files = calendar.systemd(timer) if systemd else {timer.name: calendar.cron(timer)}
    show_or_install(files, install=install, systemd=systemd, dest=dest)


def show_or_install(files: dict[str, str], *, install: bool, systemd: bool, dest: Path | None) -> None:
    """A schedule's files (a cron.d file, or systemd services and timers): printed, or written into `dest`
    (the system's folder by default) with the command that enables the timers."""
    from mfe_deploy.exec.host import write_atomic

    console = application().console
    if not install:
        for name, text in files.items():
            console.print(f"# {name}\n{text}")
        return
    folder = dest or Path("/etc/systemd/system" if systemd else "/etc/cron.d")
    for name, text in files.items():
        write_atomic(folder / name, text, 0o644)
        console.print(f"wrote {folder / name}")
    if systemd:
        timers = " ".join(n for n in files if n.endswith(".timer"))
        console.print(f"enable with: systemctl daemon-reload && systemctl enable --now {timers}")
