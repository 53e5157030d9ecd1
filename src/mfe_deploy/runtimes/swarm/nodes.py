"""A swarm's nodes: listed with the tasks of this stack they hold, drained (their tasks moved off first,
start-first) or made active again, each change waited on until every service is whole."""

from __future__ import annotations

import json
import time

from mfe_deploy import swarm_stack
from mfe_deploy.errors import MfeError
from mfe_deploy.exec.command import Command
from mfe_deploy.runtimes.contract import Node, StartFailed
from mfe_deploy.runtimes.swarm.stack import SwarmStack


def listed(stack: SwarmStack, manager: str) -> list[Node]:
    listed = stack.runner.run(Command(("docker", "node", "ls", "-q")), timeout=60)
    if listed.returncode != 0:
        raise MfeError(f"the engine at {manager} is not a swarm manager: {listed.stderr.strip()}")
    done = stack.runner.run(Command(("docker", "node", "inspect", *listed.stdout.split())), timeout=60)
    tasks: dict[str, list[str]] = {}
    for t in stack.tasks():
        tasks.setdefault(t["node"], []).append(t["name"].removeprefix(f"{stack.name}_"))
    rows = []
    for n in json.loads(done.stdout or "[]"):
        name = n["Description"]["Hostname"]
        labels = tuple(sorted((n["Spec"].get("Labels") or {}).items()))
        rows.append(
            Node(
                name=name,
                role=n["Spec"]["Role"],
                availability=n["Spec"]["Availability"],
                state=n["Status"]["State"],
                address=n["Status"].get("Addr", ""),
                labels=labels,
                tasks=tuple(sorted(tasks.get(name, []))),
            )
        )
    return sorted(rows, key=lambda r: (r.role != "manager", r.name))


def set_availability(
    stack: SwarmStack, manager: str, units: list[str], node: str, availability: str, timeout: float
) -> None:
    names = [n.name for n in listed(stack, manager)]
    if node not in names:
        raise MfeError(f"unknown node {node!r}; the swarm has: {', '.join(names)}")
    if availability == "drain":
        _move_off(stack, node, timeout)
    argv = ("docker", "node", "update", "--availability", availability, node)
    stack.must(Command(argv), f"docker node update --availability {availability}")
    deployed = stack.inspect(units)
    units = [u for u in units if u in deployed]
    deadline = time.monotonic() + timeout
    with stack.console.status(f"{node}: {availability}; waiting until every service is whole") as waiting:
        while True:
            tasks = stack.tasks()
            short = []
            for unit, spec in stack.inspect(units).items():
                wanted = (spec["Spec"].get("Mode", {}).get("Replicated") or {}).get("Replicas", 1)
                ok = [t for t in tasks if t["unit"] == unit and t["state"] == "running"]
                if availability == "drain":
                    ok = [t for t in ok if t["node"] != node]
                if len(ok) < wanted:
                    short.append(unit)
            if not short:
                return
            if time.monotonic() > deadline:
                raise StartFailed(
                    f"not whole after {timeout:.0f}s: {', '.join(short)} (a store pinned to {node} cannot "
                    f"move: its volume is there){stack.task_error(short[0])}"
                )
            waiting.update(f"waiting for {', '.join(short)}")
            time.sleep(1)


def _move_off(stack: SwarmStack, node: str, timeout: float) -> None:
    """Swarm's drain stops a node's tasks and only then starts their replacements: a service with one
    task there is gone meanwhile. So first the node takes no new task (pause), and each service with
    a task there is replaced start-first (its own update_config), which places the new tasks on the
    other nodes; the drain that follows finds nothing left to stop."""
    on_node = sorted({t["unit"] for t in stack.tasks() if t["node"] == node})
    pinned = [u for u in on_node if u in swarm_stack.STORES or u == "nginx"]
    if pinned:
        raise MfeError(
            f"{node} runs {', '.join(pinned)}, placed there with its volume or host port: draining it would "
            "stop them (pin the stores to another node with swarm.stores_label first)"
        )
    argv = ("docker", "node", "update", "--availability", "pause", node)
    stack.must(Command(argv), "docker node update --availability pause")
    before = {u: spec["Version"]["Index"] for u, spec in stack.inspect(on_node).items()}
    since = time.time()
    for unit in on_node:
        update = ("docker", "service", "update", "--force", "--detach=true", f"{stack.name}_{unit}")
        stack.must(Command(update), f"moving {unit} off {node}")
    stack.watch(on_node, before, since, timeout)
