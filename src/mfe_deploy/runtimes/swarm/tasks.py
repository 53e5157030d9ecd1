"""The containers of a stack's tasks, on every engine this machine reaches (the manager and the nodes):
found by the service label, their logs read, and the gateway's tasks asked whether they reach every service."""

from __future__ import annotations

import time
from dataclasses import dataclass

from mfe_deploy.exec.command import Command
from mfe_deploy.exec.runner import Runner
from mfe_deploy.runtimes.contract import StartFailed
from mfe_deploy.runtimes.docker.probes import HEALTH_PROBE, parse_probe


@dataclass
class TaskContainers:
    stack: str
    engines: list[tuple[str, Runner]]  # (url, engine): the manager first, then the nodes
    gateway: str | None
    nginx: bool

    def containers(self, unit: str) -> list[tuple[Runner, str]]:
        """The unit's running containers on the engines this machine reaches (the manager and the nodes)."""
        return [(engine, container) for engine, container, _ in self.task_containers(unit)]

    def task_containers(self, unit: str, *, exited: bool = False) -> list[tuple[Runner, str, str]]:
        """(engine, id, name) of the unit's task containers on every engine: running, or all with `exited`."""
        label = f"label=com.docker.swarm.service.name={self.stack}_{unit}"
        found = []
        for _, engine in self.engines:
            argv = ("docker", "ps", *(["-a"] if exited else []), "--filter", label, "--format", "{{.ID}} {{.Names}}")
            done = engine.run(Command(argv), timeout=30)
            rows = [row.partition(" ") for row in done.stdout.splitlines()] if done.returncode == 0 else []
            found += [(engine, container, name) for container, _, name in rows]
        return found

    def container(self, unit: str) -> tuple[Runner, str] | None:
        found = self.containers(unit)
        return found[0] if found else None

    def task_lines(self, unit: str, tail: int | None) -> list[tuple[str, str]]:
        """The last lines of every task of the unit (running or exited: a crashed task's output is what one
        looks for), as (time, "TASK | line"): stdout and stderr, every replica and node, in time order."""
        found: list[tuple[str, str]] = []
        for engine, container, name in self.task_containers(unit, exited=True):
            task = ".".join(name.removeprefix(f"{self.stack}_").split(".")[:2])  # api-gateway.1
            argv = ("docker", "logs", "--timestamps", "--tail", str(tail) if tail is not None else "all", container)
            done = engine.run(Command(argv), timeout=60)
            for text in (done.stdout + done.stderr).splitlines():
                stamp, _, line = text.partition(" ")
                found.append((_sortable(stamp), f"{task} | {line}"))
        return found

    def edge_resolves(self, gateway: str) -> bool:
        """nginx finds the gateway through the engine's DNS, which was seen not to answer for seconds
        right after services were scaled back up: the edge is back when it answers from nginx's task."""
        if not self.nginx:
            return True
        found = self.containers("nginx")
        return bool(found) and all(
            engine.run(Command(("docker", "exec", c, "getent", "hosts", gateway)), timeout=30).returncode == 0
            for engine, c in found
        )

    def gateways_see_all(self, timeout: float) -> None:
        """The restarted services are new tasks with new addresses: wait until every gateway task
        reaches them (its /health asks each one) before saying they are back (a request in between got 502)."""
        gateway = self.gateway
        if gateway is None:
            return
        deadline = time.monotonic() + timeout
        while True:
            answers = [
                parse_probe(engine.run(Command(("docker", "exec", c, "python3", "-c", HEALTH_PROBE)), timeout=30))
                for engine, c in self.containers(gateway)
            ]
            if answers and all(a.status == 200 for a in answers) and self.edge_resolves(gateway):
                return
            if time.monotonic() > deadline:
                raise StartFailed(f"the {gateway} tasks do not reach every service after {timeout:.0f}s")
            time.sleep(1)


def _sortable(stamp: str) -> str:
    """docker's RFC 3339 time with its fraction padded to 9 digits: it trims trailing zeros, which breaks
    the order of the strings."""
    head, dot, rest = stamp.partition(".")
    return f"{head}.{rest.rstrip('Z').ljust(9, '0')}Z" if dot else stamp
