"""The local runtime's `up`, as the phases app.up executes: what one `up` learned while preparing (which
supervisord it found, whether its configuration changed, what it started), and the waits of its phases."""

from __future__ import annotations

import time
from dataclasses import dataclass

from mfe_deploy.binaries import Binaries
from mfe_deploy.ops import health
from mfe_deploy.runtimes.contract import StartFailed
from mfe_deploy.runtimes.local import logs, observe, supervisord
from mfe_deploy.runtimes.local.site import Site


@dataclass(frozen=True)
class Migrated:
    heads: dict[str, str]  # service -> the newest migration this up applied
    backup: str  # the backup taken just before ("": none was needed)
    at: str  # the moment just before they were applied ("": none was)


@dataclass
class Deploy:
    """One `up` on this machine, between its phases."""

    bins: Binaries
    running: bool  # supervisord ran before this up
    conf_changed: bool  # supervisord.conf was rewritten: reread, update
    started: bool = False  # this up started supervisord (a failure stops it again)
    migrated: Migrated | None = None


def wait_stores(rt: Site, timeout: float) -> None:
    """Until PostgreSQL, Redis (and RabbitMQ) accept connections; a store that does not: its log's tail."""
    units = [("postgres", rt.env.database.port), ("redis", rt.env.redis.port)]
    if rt.env.uses_rabbitmq:
        units.append(("rabbitmq", rt.env.rabbitmq.port))
    for unit, port in units:
        try:
            supervisord.wait(rt, lambda port=port: health.port_open(port), timeout, unit)  # type: ignore[misc]
        except StartFailed:
            raise StartFailed(f"{unit} did not start within {timeout:.0f}s\n{logs.tail(rt, unit, 15)}") from None


def wait_services(rt: Site, bins: Binaries, timeout: float) -> None:
    """Until every service's /health says healthy; a service that crashes or stays unhealthy: its log."""
    started = time.monotonic()
    deadline = started + timeout
    names = list(rt.env.services)
    with rt.console.status("waiting for the services to report healthy") as waiting:
        while True:
            probes = observe.probe_all(rt, "", 2)
            if all(p.healthy for p in probes.values()):
                return
            waiting.update(health.progress(probes), f"{time.monotonic() - started:.0f}s of {timeout:.0f}s")
            states = supervisord.states(rt, bins)
            dead = [n for n in names if states.get(n) and states[n].state in ("FATAL", "EXITED", "BACKOFF")]
            if dead or time.monotonic() > deadline:
                name = (dead or [n for n, p in probes.items() if not p.healthy])[0]
                why = "crashed at start" if dead else f"not healthy after {timeout:.0f}s"
                raise StartFailed(f"{name} {why}; its last log lines:\n{logs.tail(rt, name, 20)}")
            time.sleep(0.2)


def converge(rt: Site, bins: Binaries, timeout: float, *, wait: bool) -> None:
    """Every service (and nginx) that does not run started; waited on until healthy."""
    states = supervisord.states(rt, bins)
    wanted = [*rt.env.services, *(["nginx"] if rt.env.nginx.enabled else [])]
    to_start = [n for n in wanted if not (states.get(n) and states[n].running)]
    if to_start:
        supervisord.start_programs(rt, to_start)
    if wait:
        wait_services(rt, bins, timeout)
        if rt.env.nginx.enabled:
            supervisord.wait(rt, lambda: health.port_open(rt.env.nginx.https_port), timeout, "nginx")
