"""What runs on the local runtime: each program's state beside its port or /health, and the probes (a web
service's /health, a worker's heartbeat file)."""

from __future__ import annotations

import time
from collections.abc import Mapping

from mfe_deploy.config.models import seconds
from mfe_deploy.exec.withenv import parse_env_text
from mfe_deploy.ops import health
from mfe_deploy.ops.health import Probe
from mfe_deploy.runtimes.contract import UnitStatus
from mfe_deploy.runtimes.local import machine, supervisord
from mfe_deploy.runtimes.local.site import Site


def status(rt: Site) -> list[UnitStatus]:
    states = supervisord.states(rt) if rt.layout.conf.exists() else {}
    live = probe_all(rt, "/live", 2)
    probes = probe_all(rt, "", 3)
    rows = []
    infra = [("postgres", rt.env.database.port), ("redis", rt.env.redis.port)]
    if rt.env.uses_rabbitmq:
        infra.append(("rabbitmq", rt.env.rabbitmq.port))
    if rt.env.monitoring.enabled:
        infra.append(("prometheus", rt.env.monitoring.port))
    for unit, port in infra:
        st = states.get(unit)
        up = health.port_open(port)
        rows.append(
            UnitStatus(
                unit,
                st.state if st else "STOPPED",
                st.pid if st else None,
                "-",
                "healthy" if up and st and st.running else "down",
            )
        )
    if rt.env.nginx.enabled:
        st = states.get("nginx")
        up = health.port_open(rt.env.nginx.https_port)
        rows.append(
            UnitStatus(
                "nginx",
                st.state if st else "STOPPED",
                st.pid if st else None,
                "-",
                "healthy" if up and st and st.running else "down",
            )
        )
    for name in rt.env.services:
        st = states.get(name)
        probe = probes[name]
        verdict = str(probe.body.get("status", "down")) if probe.status else "down"
        rows.append(
            UnitStatus(
                name,
                st.state if st else "STOPPED",
                st.pid if st else None,
                str(live[name].body.get("version", "-")),
                verdict,
            )
        )
    return rows


def probe_all(rt: Site, suffix: str, timeout: float, only: Mapping[str, object] | None = None) -> dict[str, Probe]:
    """Every service's probe, in order: a web service's /health (or /health/live with `suffix`), a worker's
    heartbeat file. `only`: these names alone (the running programs)."""
    names = [n for n in rt.env.services if only is None or n in only]
    urls = {
        name: f"http://127.0.0.1:{svc.http_port}{svc.health}{suffix}"
        for name, svc in rt.env.web_services.items()
        if name in names
    }
    probes = health.probe_all(urls, timeout=timeout)
    for name in names:
        svc = rt.env.services[name]
        if svc.kind == "worker":
            probes[name] = heartbeat(rt, name, seconds(svc.heartbeat))
    return {name: probes[name] for name in names}


def heartbeat(rt: Site, name: str, max_age: int) -> Probe:
    """A worker's health: how long ago it touched its HEARTBEAT_FILE."""
    version = parse_env_text(machine.read_text(rt.layout.env_file(name)) or "").get("SERVICE_VERSION", "-")
    try:
        age = time.time() - rt.layout.heartbeat(name).stat().st_mtime
    except FileNotFoundError:
        return Probe(None, {}, "no heartbeat yet")
    body = {
        "status": "healthy" if age < max_age else "unhealthy",
        "version": version,
        "heartbeat_age": round(age, 1),
    }
    if age < max_age:
        return Probe(200, body)
    return Probe(503, body, f"no heartbeat for {age:.0f}s (at most {max_age}s)")
