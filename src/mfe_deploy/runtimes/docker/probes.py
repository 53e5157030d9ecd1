"""What `health` runs inside a service's container, and how its answer is read (docker and Swarm alike)."""

from __future__ import annotations

import json

from mfe_deploy.config.models import Service
from mfe_deploy.exec.runner import Completed
from mfe_deploy.ops import health
from mfe_deploy.render import heartbeat_check

HEALTH_PROBE = (
    "import os, urllib.request as u, urllib.error as e\n"
    "try:\n"
    " r = u.urlopen('http://127.0.0.1:%s/health' % os.environ['PORT'], timeout=3)\n"
    " print(r.status, r.read().decode())\n"
    "except e.HTTPError as x: print(x.code, x.read().decode())\n"
)


def probe_command(svc: Service) -> tuple[str, ...]:
    """What `health` runs in a service's container: its /health, or a worker's heartbeat check (the one its
    container's healthcheck runs); both print `STATUS BODY` (parse_probe)."""
    return ("python3", "-c", HEALTH_PROBE) if svc.kind == "web" else tuple(heartbeat_check(svc))


def parse_probe(done: Completed) -> health.Probe:
    """What a probe_command printed in a container: `STATUS BODY` (a stale worker's check exits 1 after
    printing its 503), or why nothing answered."""
    code, _, body = done.stdout.strip().partition(" ")
    if not code.isdigit():
        return health.Probe(None, {}, (done.stderr.strip().splitlines() or ["not running"])[-1])
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = {}
    return health.Probe(int(code), parsed if isinstance(parsed, dict) else {})
