"""The swarm runtime on a real 3-node Docker Swarm (three engines, each in its own network, mount and
UTS namespaces, joined by a bridge on a test subnet: tests/swarm.sh): the stack spreads over the nodes,
a rolling update, a rollback and a node drain under a fixed-rate load through nginx from a client
namespace, and a node whose engine dies and comes back."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

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


def _postgres_segments(pcap: bytes) -> list[bytes]:
    """The TCP payloads to or from port 5432 inside the VXLAN packets (UDP 4789) of a pcap file: the
    database traffic that crossed from one node to another over the overlay."""
    import struct

    assert pcap[:4] == b"\xd4\xc3\xb2\xa1", "not a little-endian pcap file"
    found, at = [], 24
    while at + 16 <= len(pcap):
        size = struct.unpack_from("<I", pcap, at + 8)[0]
        frame, at = pcap[at + 16 : at + 16 + size], at + 16 + size
        inner = _payload(frame, udp_port=4789)
        if inner is not None and len(inner) > 8:
            segment = _payload(inner[8:], tcp_port=5432)
            if segment:
                found.append(segment)
    return found


def _payload(frame: bytes, *, udp_port: int | None = None, tcp_port: int | None = None) -> bytes | None:
    """An Ethernet frame's IPv4 UDP (or TCP) payload when either port is the one given, else None."""
    import struct

    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    header, protocol = (ip[0] & 0x0F) * 4, ip[9]
    total = struct.unpack_from(">H", ip, 2)[0]
    body = ip[header:total]
    if udp_port is not None and protocol == 17 and len(body) >= 8:
        ports = struct.unpack_from(">HH", body, 0)
        return body[8:] if udp_port in ports else None
    if tcp_port is not None and protocol == 6 and len(body) >= 20:
        ports = struct.unpack_from(">HH", body, 0)
        return body[(body[12] >> 4) * 4 :] if tcp_port in ports else None
    return None


def test_database_traffic_between_nodes_holds_no_password_or_sql(project: Project, tmp_path: Path) -> None:
    """Issue 33: the overlays are plain here (no ESP in this kernel), so PostgreSQL speaks TLS (on by
    default on Swarm). A capture on the switch that joins the nodes, while users register, log in and pay,
    holds PostgreSQL traffic between nodes, and none of it shows a secret or a statement."""
    capture = tmp_path / "overlay.pcap"
    tcpdump = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            "mfesw-sw",
            "tcpdump",
            "-i",
            "br0",
            "-U",
            "-s",
            "0",
            "-w",
            str(capture),
            "udp port 4789",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(2)  # tcpdump listening
        for n in range(5):
            email = f"cap{n}@example.com"
            request("POST", "/api/auth/register", {"email": email, "password": "correct horse"})
            code, text = request("POST", "/api/auth/login", {"email": email, "password": "correct horse"})
            assert code == 200, text
            token = json.loads(text)["access_token"]
            code, text = request("POST", "/api/payments", {"amount": 100 + n, "currency": "EUR"}, token=token)
            assert code == 201, text
        time.sleep(2)
    finally:
        tcpdump.terminate()
        _, errors = tcpdump.communicate(timeout=20)
    pcap = capture.read_bytes()
    segments = _postgres_segments(pcap)
    data = b"".join(segments)
    print(f"overlay capture: {len(pcap)} bytes, {len(segments)} PostgreSQL segments between nodes ({len(data)} bytes)")
    assert len(data) > 2000, (errors.decode(), len(pcap))  # PostgreSQL traffic did cross the overlay
    secrets = [value.encode() for value in project.secrets.values() if len(value) >= 12]
    assert secrets and not [s for s in secrets if s in pcap]
    for text in (b"INSERT INTO", b"SELECT ", b"payments", b"SCRAM-SHA-256", b"database\x00", b"user\x00"):
        assert text not in data, text


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
