"""mfe-deploy nodes [drain|activate NODE]: a swarm's hosts, their labels, and the tasks they hold."""

from __future__ import annotations

from typing import Annotated

import typer

from mfe_deploy.cli.app import GroupOptions, JsonOption, app, application
from mfe_deploy.cli.context import LockWait, mutating, runtime
from mfe_deploy.errors import UsageError

nodes_app = typer.Typer(
    help="A swarm's nodes (runtime: swarm): list, drain, activate. Without a verb, `nodes --env E` lists them; "
    "the group's options (--env, --json) reach its verbs.",
    rich_markup_mode=None,
    cls=GroupOptions,
)
app.add_typer(nodes_app, name="nodes")

NodeArg = Annotated[str, typer.Argument(help="The node's host name (as `mfe-deploy nodes` lists it).")]
OptionalEnv = Annotated[str | None, typer.Option("--env", "-e", help="Environment name (a file in environments/).")]
Timeout = Annotated[float, typer.Option("--timeout", help="Seconds to wait until every service is whole.")]


@nodes_app.callback(invoke_without_command=True)
def nodes(ctx: typer.Context, env: OptionalEnv = None, as_json: JsonOption = False) -> None:
    """List the nodes: role, availability, state, labels, and this stack's tasks on each."""
    from mfe_deploy.runtimes.contract import Nodes, able

    if ctx.invoked_subcommand is not None:
        return
    if env is None:
        raise UsageError("mfe-deploy nodes needs --env NAME (an environment with runtime: swarm)")
    rows = able(runtime(env, "swarm"), Nodes).nodes()
    console = application().console
    if as_json:
        console.json(
            [
                {
                    "name": n.name,
                    "role": n.role,
                    "availability": n.availability,
                    "state": n.state,
                    "address": n.address,
                    "labels": dict(n.labels),
                    "tasks": list(n.tasks),
                }
                for n in rows
            ]
        )
        return
    console.table(
        ("NODE", "ROLE", "AVAILABILITY", "STATE", "ADDRESS", "LABELS", "TASKS"),
        [
            (
                n.name,
                n.role,
                n.availability,
                n.state,
                n.address,
                ",".join(f"{k}={v}" for k, v in n.labels) or "-",
                " ".join(n.tasks) or "-",
            )
            for n in rows
        ],
    )


def _availability(
    verb: str, env: str | None, node: str, availability: str, wait: float, timeout: float, as_json: bool
) -> None:
    from mfe_deploy.runtimes.contract import Nodes, able

    if env is None:
        raise UsageError(f"mfe-deploy nodes {verb} needs --env NAME (an environment with runtime: swarm)")
    rt = runtime(env, "swarm")
    with mutating(env, f"nodes {availability}", {"node": node}, wait=wait):
        able(rt, Nodes).set_availability(node, availability, timeout)
    console = application().console
    if as_json:
        console.json({"env": env, "node": node, "availability": availability, "services_whole": True})
        return
    console.info(f"{node}: {availability}; every service is whole")


@nodes_app.command()
def drain(
    node: NodeArg,
    env: OptionalEnv = None,
    lock_wait: LockWait = 0,
    timeout: Timeout = 300,
    as_json: JsonOption = False,
) -> None:
    """Move every task off NODE (Swarm reschedules them) and wait until the services are whole again."""
    _availability("drain", env, node, "drain", lock_wait, timeout, as_json)


@nodes_app.command()
def activate(
    node: NodeArg,
    env: OptionalEnv = None,
    lock_wait: LockWait = 0,
    timeout: Timeout = 300,
    as_json: JsonOption = False,
) -> None:
    """Let NODE take tasks again."""
    _availability("activate", env, node, "active", lock_wait, timeout, as_json)
