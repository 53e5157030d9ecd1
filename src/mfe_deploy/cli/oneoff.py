"""mfe-deploy run, exec and db shell: one-off commands with a service's release and variables."""

from __future__ import annotations

from typing import Annotated

import typer

from mfe_deploy.cli.app import EnvOption, Verbs, app
from mfe_deploy.cli.context import RuntimeOption, audited, runtime

db_app = typer.Typer(help="A service's database.", rich_markup_mode=None, cls=Verbs)
app.add_typer(db_app, name="db")

PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}
ServiceArgument = Annotated[str, typer.Argument(help="The service whose release and variables the command gets.")]


def _command(ctx: typer.Context) -> list[str]:
    argv = list(ctx.args)
    if not argv:
        raise typer.BadParameter("the command to run goes after --: `mfe-deploy run SERVICE --env E -- CMD ARG...`")
    return argv


def _one_off(env: str, service: str, argv: list[str], runtime_name: str | None, *, in_place: bool) -> None:
    from mfe_deploy.runtimes.contract import OneOff, able

    rt = runtime(env, runtime_name)
    action = "exec" if in_place else "run"
    # The audit keeps the program's name only: its arguments are the operator's, and may hold anything.
    with audited(env, action, {"service": service, "program": argv[0]}) as record:
        code = able(rt, OneOff).run(service, argv, in_place=in_place)
        record["exit_code"] = code
    raise typer.Exit(code)


@app.command(context_settings=PASS_THROUGH)
def run(ctx: typer.Context, service: ServiceArgument, env: EnvOption, runtime_name: RuntimeOption = None) -> None:
    """Run a one-off command with a service's release and its variables (never in an argv): `run auth --env E
    -- python -m my.script`; its output and exit code are the command's. Local runtime in this release."""
    _one_off(env, service, _command(ctx), runtime_name, in_place=False)


@app.command("exec", context_settings=PASS_THROUGH)
def exec_(ctx: typer.Context, service: ServiceArgument, env: EnvOption, runtime_name: RuntimeOption = None) -> None:
    """Run a command beside a running service, with its variables (on the local runtime, where there is no
    container to enter, as `run` does); its output and exit code are the command's."""
    _one_off(env, service, _command(ctx), runtime_name, in_place=True)


@db_app.command("shell", context_settings=PASS_THROUGH)
def shell(ctx: typer.Context, service: ServiceArgument, env: EnvOption, runtime_name: RuntimeOption = None) -> None:
    """psql on the service's database as the service's own role (what it may do, you may do); arguments
    after -- go to psql (`db shell auth --env E -- -c 'SELECT 1'`). The password goes by a private pgpass file."""
    from mfe_deploy.runtimes.contract import OneOff, able

    rt = runtime(env, runtime_name)
    with audited(env, "db shell", {"service": service}) as record:
        code = able(rt, OneOff).db_shell(service, list(ctx.args))
        record["exit_code"] = code
    raise typer.Exit(code)
