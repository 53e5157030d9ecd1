"""Issue 33: nginx's certificate from a real ACME CA (Debian's pebble, on loopback): `up` orders it (http-01,
answered by nginx from the challenge folder), `tls status` reads it, `tls renew` does nothing until it is due
and, forced, replaces it under load with no failed request; the account key and the certificate's key stay
0600. Then the unhappy path: a CA that refuses the order is one line and `up` exits 1."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from mfe_deploy import tls
from tests import figures
from tests.load import Load
from tests.local_project import LocalProject, make_local_project
from tests.pg import free_port

ENV = "acme"
pytestmark = pytest.mark.skipif(shutil.which("pebble") is None, reason="pebble: run scripts/setup-system")


@dataclass
class Pebble:
    directory: str
    management: str
    ca_file: Path

    def issuer_of_its_certificates(self) -> x509.Name:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        url = f"{self.management}/intermediates/0"
        with urllib.request.urlopen(url, context=context, timeout=10) as answer:  # noqa: S310 - loopback
            return x509.load_pem_x509_certificate(answer.read()).subject


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pebble, int]]:
    """pebble serving its API over HTTPS with a certificate of a CA made here; it validates http-01 on
    the port it is given (nginx's HTTP port of the stack below)."""
    folder = tmp_path_factory.mktemp("pebble")
    made = tls.database_set(["localhost", "127.0.0.1"])
    for name, text in made.items():
        (folder / name).write_text(text)
    port, management, http_port = free_port(), free_port(), free_port()
    config = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{port}",
            "managementListenAddress": f"127.0.0.1:{management}",
            "certificate": str(folder / "server.crt"),
            "privateKey": str(folder / "server.key"),
            "httpPort": http_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    (folder / "pebble.json").write_text(json.dumps(config))
    log = (folder / "pebble.log").open("wb")
    # PEBBLE_VA_NOSLEEP: validate at once (pebble otherwise waits up to 15 s); its default 5% of rejected
    # nonces stays on: the client must take a badNonce and try again.
    process = subprocess.Popen(
        ["pebble", "-config", str(folder / "pebble.json")],
        stdout=log,
        stderr=log,
        env={"PEBBLE_VA_NOSLEEP": "1", "PATH": "/usr/bin:/bin"},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, (folder / "pebble.log").read_text()
                time.sleep(0.1)
        yield Pebble(f"https://127.0.0.1:{port}/dir", f"https://127.0.0.1:{management}", folder / "ca.pem"), http_port
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def acme_project(root: Path, pebble: Pebble, http_port: int, directory: str | None = None) -> LocalProject:
    https = free_port()
    yaml = (
        f"nginx:\n  enabled: true\n  domain: localhost\n  http_port: {http_port}\n  https_port: {https}\n"
        "  rate_limit:\n    rate: 1000r/s\n    burst: 1000\n"  # the load below is no abuse
        f"  tls:\n    mode: acme\n    acme:\n      directory: {directory or pebble.directory}\n"
        f"      ca_bundle: {pebble.ca_file}\n      email: ops@example.com\n"
    )
    p = make_local_project(root, ENV, extra_yaml=yaml)
    p.ports.update(nginx_http=http_port, nginx_https=https)
    return p


def served(port: int) -> x509.Certificate:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as wrapped,
    ):
        der = wrapped.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_up_orders_the_certificate_and_a_forced_renewal_under_load_drops_nothing(
    pebble: tuple[Pebble, int], tmp_path: Path
) -> None:
    ca, http_port = pebble
    p = acme_project(tmp_path / "project", ca, http_port)
    up = p.cli("up", "--env", ENV)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "certificate from the ACME CA, valid until" in up.stderr, up.stderr
        https = p.ports["nginx_https"]
        first = served(https)
        assert first.issuer == ca.issuer_of_its_certificates()  # pebble's, not the self-signed placeholder
        names = first.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.DNSName) == ["localhost"]
        state = json.loads(p.cli("tls", "status", "--env", ENV, "--json").stdout)
        assert (state["mode"], state["names"], state["due"]) == ("acme", ["localhost"], None), state
        assert state["days_left"] > 30
        again = p.cli("tls", "renew", "--env", ENV, "--json")
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["renewed"] is False  # not due: the CA is not asked
        assert served(https).serial_number == first.serial_number
        for path in (
            p.root / ".mfe" / ENV / "state" / "acme" / "account.pem",
            p.root / ".mfe" / ENV / "local" / "nginx" / "ssl" / "key.pem",
        ):
            assert path.stat().st_mode & 0o777 == 0o600, path
        with httpx.Client(base_url=f"https://localhost:{https}", verify=False, timeout=30) as client:
            email = "load@example.com"
            assert (
                client.post("/api/auth/register", json={"email": email, "password": "correct horse"}).status_code == 201
            )
            token = client.post("/api/auth/login", json={"email": email, "password": "correct horse"}).json()[
                "access_token"
            ]
        with Load(f"https://localhost:{https}", token, rate=40, limit=120) as load:
            time.sleep(2)
            forced = p.cli("tls", "renew", "--env", ENV, "--force", "--json")
            time.sleep(2)
        figures.record(f"renewal under load: {load.tally.sent} requests, {load.tally.failed} failed")
        assert forced.returncode == 0, forced.stderr
        assert json.loads(forced.stdout)["renewed"] is True
        assert load.tally.sent > 50 and load.tally.failed == 0, load.tally.reasons
        second = served(https)
        assert second.serial_number != first.serial_number and second.issuer == first.issuer
        assert not list((p.root / ".mfe" / ENV).rglob("acme-challenge/*"))  # each challenge withdrawn
    finally:
        p.cli("down", "--env", ENV, "--volumes", "--yes")


def test_a_ca_that_cannot_be_reached_fails_up_in_one_line(pebble: tuple[Pebble, int], tmp_path: Path) -> None:
    ca, http_port = pebble
    closed = f"https://127.0.0.1:{free_port()}/dir"
    p = acme_project(tmp_path / "project", ca, http_port, directory=closed)
    up = p.cli("up", "--env", ENV)
    try:
        assert up.returncode == 1, up.stdout + up.stderr
        assert f"error: the ACME server at {closed} did not answer" in up.stderr
        assert "Traceback" not in up.stderr
        assert p.cli("health", "--env", ENV).returncode == 0  # the stack runs, on the placeholder certificate
    finally:
        p.cli("down", "--env", ENV, "--volumes", "--yes")


def test_when_a_certificate_is_due() -> None:
    """The renewal rule alone: none yet, the self-signed placeholder, another name, or too few days left."""
    from mfe_deploy import acme

    now = acme.now()
    assert acme.due(None, "localhost", 30, now) == "no certificate yet"
    placeholder, _ = tls.self_signed("localhost")
    assert "self-signed" in (acme.due(placeholder.encode(), "localhost", 30, now) or "")
    issued = tls.database_set(["localhost"], days=90)["server.crt"].encode()
    assert acme.due(issued, "localhost", 30, now) is None
    assert acme.due(issued, "api.example.com", 30, now) == "the certificate is for localhost, not api.example.com"
    ending = tls.database_set(["localhost"], days=10)["server.crt"].encode()
    assert acme.due(ending, "localhost", 30, now) == "10 days left (renewed below 30)"


def test_tls_schedule_installs_a_daily_renew(tmp_path: Path) -> None:
    """The timer of `tls renew`: a cron file (0644, for root) or a systemd service and timer, written where
    --dest says; the run renews only when due, so daily is enough."""
    yaml = "nginx:\n  enabled: true\n  domain: localhost\n  tls:\n    mode: acme\n"
    p = make_local_project(tmp_path / "project", ENV, extra_yaml=yaml)
    dest = tmp_path / "cron.d"
    done = p.cli("tls", "schedule", "--env", ENV, "--install", "--dest", str(dest))
    assert done.returncode == 0, done.stderr
    written = dest / f"mfe-deploy-tls-{ENV}"
    assert written.stat().st_mode & 0o777 == 0o644
    line = written.read_text().splitlines()[-1]
    assert line.startswith("17 3 * * * root /bin/sh -c ") and f"tls renew --env {ENV}" in line, line
    units = p.cli("tls", "schedule", "--env", ENV, "--systemd")
    assert "OnCalendar=*-*-* 3:17:00" in units.stdout and "ExecStart=" in units.stdout, units.stdout
