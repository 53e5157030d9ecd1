"""Workers (`kind: worker`): a service with no HTTP, alive by its heartbeat, drained on SIGTERM. The bundled
`activity` worker on the local runtime, with the real stack: every event once, killed and restarted, stopped
cleanly. (Rolled under load on docker: tests/test_docker_runtime.py.)"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mfe_deploy.config.models import Service
from tests.local_project import LocalProject, make_local_project
from tests.stack import poll
from tests.test_services_e2e import _user

ENV = "wrk"


def test_a_worker_has_no_port_and_a_web_service_needs_one() -> None:
    assert Service(kind="worker").port is None
    with pytest.raises(ValueError, match="a web service needs its port"):
        Service()
    with pytest.raises(ValueError, match="a worker serves no HTTP"):
        Service(kind="worker", port=4000)
    with pytest.raises(ValueError, match="cannot be a worker"):
        Service(kind="worker", role="gateway")
    with pytest.raises(ValueError, match="singleton is for workers"):
        Service(port=4000, singleton=True)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalProject]:
    p = make_local_project(tmp_path_factory.mktemp("workers") / "project", ENV)
    env_file = p.root / "environments" / f"{ENV}.yaml"
    text = env_file.read_text().replace("services:\n", "services:\n  activity:\n    heartbeat: 6s\n", 1)
    env_file.write_text(text + "secrets:\n  databases:\n    activity: ${ACTIVITY_DB_PASSWORD:-dev-activity-password}\n")
    up = p.cli("up", "--env", ENV)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        yield p
    finally:
        p.cli("down", "--env", ENV, "--volumes", "--yes")


def _activity(p: LocalProject, sql: str) -> str:
    return p.psql("universal_mfe_dev", f"SET search_path = activity; {sql}").strip().splitlines()[-1]


def test_the_worker_is_up_healthy_by_its_heartbeat_and_routed_nowhere(project: LocalProject) -> None:
    rows = project.status()
    assert rows["activity"]["state"] == "RUNNING" and rows["activity"]["health"] == "healthy", rows["activity"]
    health = json.loads(project.cli("health", "--env", ENV, "--json").stdout)
    assert health["activity"]["status"] == 200 and health["activity"]["body"]["heartbeat_age"] < 6
    env_text = next(project.root.glob(f".mfe/{ENV}/**/env/activity.env")).read_text()
    assert "HEARTBEAT_FILE=" in env_text and "\nPORT=" not in env_text
    gateway_env = next(project.root.glob(f".mfe/{ENV}/**/env/api-gateway.env")).read_text()
    assert "ACTIVITY_SERVICE_URL" not in gateway_env and '"activity"' not in gateway_env


def test_every_event_is_handled_once(project: LocalProject) -> None:
    with project.gateway() as gw:
        for _ in range(5):
            _, auth = _user(gw)
            paid = gw.post("/api/payments", json={"amount": 100, "currency": "EUR"}, headers=auth)
            assert paid.status_code == 201
    # admin records every event it consumes: the worker must hold the same ids, each once
    admin = "SELECT count(*) FROM admin.events"
    assert poll(lambda: int(project.psql("universal_mfe_dev", admin).strip()) >= 10, timeout=30)
    expected = int(project.psql("universal_mfe_dev", admin).strip())
    assert poll(lambda: int(_activity(project, "SELECT count(*) FROM handled")) == expected, timeout=30)
    missing = "SELECT count(*) FROM admin.events e LEFT JOIN activity.handled h USING (event_id) WHERE h IS NULL"
    assert project.psql("universal_mfe_dev", missing).strip() == "0"
    assert _activity(project, "SELECT sum(n) FROM counts") == str(expected)  # each handled once


def test_a_killed_worker_is_restarted_and_healthy_again(project: LocalProject) -> None:
    pid = project.status()["activity"]["pid"]
    os.kill(pid, signal.SIGKILL)
    assert poll(lambda: project.status()["activity"]["pid"] not in (pid, None), timeout=30)
    assert poll(lambda: project.status()["activity"]["health"] == "healthy", timeout=30)


def test_a_stopped_worker_drains_and_its_health_goes(project: LocalProject) -> None:
    """SIGTERM: it stops taking messages, finishes and exits on its own, long before its stop timeout; its
    heartbeat goes with it, so health says so."""
    log = next(Path(project.root).glob(f".mfe/{ENV}/**/logs/activity.log"))
    before = log.read_text().count('"message": "stopped"')
    pid = project.status()["activity"]["pid"]
    started = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    assert poll(lambda: log.read_text().count('"message": "stopped"') == before + 1, timeout=20)
    assert time.monotonic() - started < 15
    assert "stopping: no new messages" in log.read_text()
    assert poll(lambda: project.status()["activity"]["health"] == "healthy", timeout=30)  # supervisord restarts it
