"""The Typer application, its global options and the object every command receives."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from mfe_deploy.console import Console

if TYPE_CHECKING:
    from mfe_deploy.config.loader import Loaded
    from mfe_deploy.config.models import Environment
    from mfe_deploy.config.secrets import Secrets
    from mfe_deploy.exec.host import Host
    from mfe_deploy.notify import Event, Notifier


class Verbs(TyperGroup):
    """A group whose `--help` lists each verb with its first sentence whole (click cuts at a width)."""

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows = [(name, summary(command)) for name, command in self.commands.items() if not command.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class GroupOptions(Verbs):
    """A group whose own options reach its verbs: `migrate --env X status` is `migrate status --env X`.
    An option the verb has too, given to the group and not to the verb, is handed on as it was given."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name, command, rest = super().resolve_command(ctx, args)
        if command is None:
            return name, command, rest
        given = {arg.split("=", 1)[0] for arg in rest if arg.startswith("-")}
        for param in command.params:
            opts = getattr(param, "opts", None)  # options, not arguments
            value = ctx.params.get(param.name or "")
            if not opts or value in (None, False) or value == param.default or given & set(opts):
                continue
            rest = [*rest, opts[0]] if getattr(param, "is_flag", False) else [*rest, opts[0], str(value)]
        return name, command, rest


# The root's --help: commands by what they are for, each with its whole first sentence.
PANELS = {
    "Start and deploy": ("init", "up", "plan", "diff", "rollback", "render", "down"),
    "Inspect": ("status", "health", "watch", "logs", "releases", "history", "envs", "validate", "config"),
    "Data": ("backup", "restore", "recover", "migrate"),
    "Operate": (
        "run",
        "exec",
        "db",
        "jobs",
        "maintenance",
        "lock",
        "keys",
        "notify",
        "nodes",
        "hosts",
        "tls",
        "images",
        "admin",
    ),
    "This tool": ("help", "docs", "version"),
}


def summary(command: Any) -> str:
    """A command's first sentence, whole (click cuts its short help at a width, mid-sentence)."""
    text = " ".join((command.help or command.short_help or "").split())
    first = text.split(". ", 1)[0]
    return first if first.endswith(".") else first + "."


class RootGroup(TyperGroup):
    def list_commands(self, ctx: Any) -> list[str]:
        ordered = [name for names in PANELS.values() for name in names if name in self.commands]
        return ordered + sorted(name for name in self.commands if name not in ordered)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        placed = {name for names in PANELS.values() for name in names}
        others = tuple(sorted(name for name in self.commands if name not in placed))
        for title, names in (*PANELS.items(), ("Other", others)):
            rows = [(n, summary(self.commands[n])) for n in names if n in self.commands and not self.commands[n].hidden]
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


app = typer.Typer(
    cls=RootGroup,
    name="mfe-deploy",
    help="Validate, render and deploy the universal MFE backend.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@dataclass
class Application:
    project_dir: Path
    debug: bool = False
    console: Console = field(default_factory=Console)
    resources: ExitStack = field(default_factory=ExitStack)  # connections, closed when the command ends
    hosts: dict[str, Host] = field(default_factory=dict)  # per environment, connected once
    notifiers: dict[str, Notifier] = field(default_factory=dict)
    loaded: dict[str, Loaded] = field(default_factory=dict)  # each environment is read once per command
    resolved: dict[str, Secrets] = field(default_factory=dict)

    def environment(self, env: str) -> Loaded:
        if env not in self.loaded:
            from mfe_deploy.config import loader

            self.loaded[env] = loader.load(self.project_dir, env)
        return self.loaded[env]

    def secrets(self, env: str) -> Secrets:
        """The environment's secrets, resolved when a step first needs one (read-only commands never
        do); from then on the console masks every value."""
        if env not in self.resolved:
            from mfe_deploy.config import loader

            _, self.resolved[env] = loader.load_with_secrets(self.project_dir, env, loaded=self.environment(env))
            self.console.add_secrets(self.resolved[env].maskable())
        return self.resolved[env]

    def notifier(self, env: str) -> Notifier | None:
        """The environment's webhooks, or None when it has none (or its secrets cannot be read now)."""
        if env not in self.notifiers:
            from mfe_deploy.errors import MfeError
            from mfe_deploy.notify import Notifier

            try:
                loaded, secrets = self.environment(env), self.secrets(env)
            except MfeError as exc:
                self.console.warn(f"notify: the webhooks of {env} cannot be read: {exc.lines()[0]}")
                return None
            self.notifiers[env] = Notifier.of(loaded.env, secrets, self.console.warn)
        found = self.notifiers[env]
        return found if found.hooks else None

    def notify(self, env: str, *events: Event) -> None:
        notifier = self.notifier(env) if events else None
        for event in events if notifier is not None else ():
            notifier.notify(event)  # type: ignore[union-attr]

    def notify_outcome(self, record: dict[str, object]) -> None:
        """For audit.audited(done=...): the events an action's outcome calls for."""
        from mfe_deploy.notify import events_for

        self.notify(str(record["env"]), *events_for(record))

    def drain(self) -> None:
        for notifier in self.notifiers.values():
            notifier.drain()


# The command that runs: set by main() for one invocation and reset after it (a context variable, as
# Starlette keeps a request's: no Application outlives its command, and none is made behind main's back).
_COMMAND: ContextVar[Application] = ContextVar("mfe_deploy_command")


def application() -> Application:
    """This command's context: main() makes one per invocation, the root callback fills in the project and
    --debug."""
    try:
        return _COMMAND.get()
    except LookupError:
        raise RuntimeError("no mfe-deploy command runs here: main() makes the Application") from None


@contextmanager
def running(state: Application) -> Iterator[Application]:
    """`state` is the command's context while the block runs."""
    token = _COMMAND.set(state)
    try:
        yield state
    finally:
        _COMMAND.reset(token)


def _version(value: bool) -> None:
    if value:
        from mfe_deploy import __version__

        typer.echo(f"mfe-deploy {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    project_dir: Annotated[
        Path | None,
        typer.Option("--project-dir", "-C", envvar="MFE_PROJECT_DIR", help="Project root (holds environments/)."),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for unexpected errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", help="Print mfe-deploy's version and exit.", is_eager=True, callback=_version)
    ] = False,
) -> None:
    if project_dir is None:
        from mfe_deploy.config.project import find_project

        here = Path.cwd().resolve()
        project_dir = find_project(here) or here
    state = application()
    state.project_dir, state.debug = project_dir.resolve(), debug or _env_debug()


def _env_debug() -> bool:
    return os.environ.get("MFE_DEBUG", "") not in ("", "0")


def host(env: str, environment: Environment | None = None) -> Host:
    """Where the environment runs, and so where its lock, release ledger and audit log live: this
    machine, or its remote host (one connection per command, shared by everything the command does).
    `environment`: the loaded model, when the caller has it (not loaded again)."""
    state = application()
    if env not in state.hosts:
        from mfe_deploy.exec import host as hosts
        from mfe_deploy.remote.target import parse

        model = environment or state.environment(env).env
        target = parse(model, state.project_dir, Path.home())
        if target is None:
            state.hosts[env] = hosts.local(state.project_dir, env)
        else:
            from mfe_deploy.remote.ssh import open_host

            state.hosts[env] = open_host(target, env, state.resources)
    return state.hosts[env]


ReleaseOption = Annotated[
    str | None,
    typer.Option(
        "--release",
        "--version",
        help="The release: every service's image tag [default: git describe of the project, or dev].",
    ),
]
EnvOption = Annotated[str, typer.Option("--env", "-e", help="Environment name (a file in environments/).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def release(given: str | None) -> str:
    """The release a command deploys, plans or renders: --release, else `git describe --always --dirty` of
    the project, else dev. One default for every command, so that `render --check` compares with what
    `up` deployed."""
    if given:
        return given
    from mfe_deploy.errors import MfeError
    from mfe_deploy.exec.command import Command
    from mfe_deploy.exec.process import LocalProcess

    project = str(application().project_dir)
    try:
        done = LocalProcess().run(Command(("git", "-C", project, "describe", "--always", "--dirty")), timeout=5)
    except MfeError:  # no git here, or it hung
        return "dev"
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "dev"
