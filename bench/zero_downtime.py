"""Failed requests during deploys and rollbacks through nginx over HTTPS (goal: 0 in every row).

A fixed-rate load (tests/load.py: keep-alive clients and a new connection per request, GET and POST, and
the aggregate `GET /health` four times a second, as a load balancer polls it, printed apart) runs from 2 s before each
operation to 2 s after it, on a staging-like stack (2 gateway replicas, nginx TLS, RabbitMQ) on the Docker
engine here. Rows: steady state; `up` v1 -> v2 of every service;
`rollback` of each of the five services; `up` of a v3 whose gateway exits at start (rolled back by
itself); `up` of a v4 whose profile runs with a wrong database password (never healthy); `kill -9` of
the CLI during the build, the migrations and the container start, 10 s of observation, then the same
`up --force-unlock` (the row counts all three; `history` must show the killed one as interrupted).
Needs a Docker engine and the stand-in images (scripts/setup-docker).

    .venv/bin/python bench/zero_downtime.py [--rate 200] [--remote] [--quick]

--remote: the same stack on a remote target over SSH (a real sshd on loopback in front of this engine).
--quick: steady state, `up` v1 -> v2, `rollback api-gateway` and `rollback auth`, and the two `up` rows below only.
Three more rows time `up` of every service with `rollout.parallel` 1 (one at a time, as before the waves;
a reference row), 2 and 4, side by side.
A reference row (not counted against the goal) times the way a rollback was done before, side by side:
auth's container recreated in place by compose (stop, then start), here, not over SSH.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.conftest import strong_secrets  # noqa: E402
from tests.load import Load  # noqa: E402
from tests.pg import free_port  # noqa: E402

PREFIX = "mfe-bench-zd"
SERVICES = ("api-gateway", "auth", "payments", "admin", "profile")
# Every staging secret the suite sets (tests/conftest.py), but Sentry's: no DSN, no Sentry.
SECRETS = {k: v for k, v in strong_secrets("bench").items() if k.startswith("STAGING_") and "SENTRY" not in k}


def docker_build(tag: str, dockerfile: str, files: dict[str, str] | None = None) -> None:
    with tempfile.TemporaryDirectory() as context:
        for name, text in (files or {}).items():
            (Path(context) / name).write_text(text)
        (Path(context) / "Dockerfile").write_text(dockerfile)
        subprocess.run(
            ["docker", "build", "-q", "-t", tag, context],
            text=True,
            check=True,
            capture_output=True,
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
        )


# A profile that starts with a wrong database password: it runs, and never becomes healthy.
BROKEN_DATABASE_ENTRYPOINT = """\
#!/bin/sh
sed -E 's#^(DATABASE_URL=.postgresql://[^:]+:)[^@]+@#\\1wrong-password@#' /run/secrets/env > /tmp/env
exec /opt/mfe/bin/mfe-service.real "$1" --env-file /tmp/env --user 10001:10001
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--remote", action="store_true", help="deploy over SSH to a remote target")
    parser.add_argument("--quick", action="store_true", help="four rows only")
    args = parser.parse_args()
    rate = args.rate
    import httpx

    env = {**os.environ, **SECRETS}
    https = free_port()
    rows: list[tuple[str, int, int, float]] = []
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp) / "project"
        shutil.copytree(REPO / "environments", root / "environments")
        target = ""
        if args.remote:
            from tests.sshd import sshd

            server = stack.enter_context(sshd(Path(tmp) / "sshd"))
            env["HOME"] = tmp
            target = (
                f"target: ssh://root@127.0.0.1:{server.port}\n"
                f"ssh: {{identity_file: {server.user_key}, known_hosts: {tmp}/known_hosts, remote_dir: {tmp}/host}}\n"
            )
        (root / "environments" / "zd.yaml").write_text(f"""\
extends: staging
{target}runtime: docker
services: {{api-gateway: {{replicas: 2}}}}
jwt: {{expires_in: 2h}}  # the load's one token outlives the whole run
nginx: {{domain: localhost, http_port: {free_port()}, https_port: {https},
         rate_limit: {{rate: 100000r/s, burst: 100000}}}}
images: {{postgres: mfe-local/postgres:15, redis: mfe-local/redis:7, rabbitmq: mfe-local/rabbitmq:3,
          nginx: mfe-local/nginx:1.22, service_base: mfe-local/python:3.11, services_prefix: {PREFIX}}}
""")
        cli = [sys.executable, "-m", "mfe_deploy", "-C", str(root)]

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*cli, *args, "--env", "zd"], env=env, capture_output=True, text=True, timeout=900)

        def killed_at(marker: str, version: str) -> None:
            """`up`, killed with SIGKILL when its progress prints `marker`; 10 s; then `up --force-unlock`."""
            proc = subprocess.Popen(
                [*cli, "up", "--version", version, "--env", "zd"],
                env=env,
                text=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            assert proc.stderr is not None
            seen = ""
            for line in proc.stderr:
                seen += line
                if marker in line:
                    break
            proc.kill()
            proc.wait()
            assert marker in seen, f"never reached {marker!r}:\n{seen}"
            time.sleep(10)
            history = run("history", "--json").stdout
            assert '"interrupted"' in history, history[-2000:]
            again = run("up", "--version", version, "--force-unlock")
            assert again.returncode == 0, again.stderr[-3000:]

        try:
            if args.remote:
                trusted = run("hosts", "trust", "--yes")
                assert trusted.returncode == 0, trusted.stderr
            first = run("up", "--version", "v1")
            assert first.returncode == 0, first.stderr
            for s in SERVICES:  # v2: the same code, a new image (built in a second, as a CI build would have)
                docker_build(f"{PREFIX}/{s}:v2", f"FROM {PREFIX}/{s}:v1\nLABEL bench.version=v2\n")
            base = f"https://localhost:{https}"
            with httpx.Client(base_url=base, verify=False, timeout=15) as gw:  # noqa: S501 - self-signed here
                gw.post("/api/auth/register", json={"email": "load@example.com", "password": "correct horse"})
                token = gw.post("/api/auth/login", json={"email": "load@example.com", "password": "correct horse"})
                token = token.json()["access_token"]

            def measured(name: str, operation: Callable[[], object]) -> None:
                with Load(base, token, rate=rate, health_every=0.25) as load:  # and /health, as a monitor
                    time.sleep(2)
                    started = time.monotonic()
                    error = ""
                    try:
                        operation()
                    except (AssertionError, subprocess.SubprocessError) as exc:  # the row is printed, marked
                        error = f"    OPERATION FAILED: {str(exc).strip()[-1500:]}"
                    took = time.monotonic() - started
                    time.sleep(2)
                rows.append((name, load.tally.sent, load.tally.failed, took))
                print(f"{name:40} {load.tally.sent:7} {load.tally.failed:7} {took:8.1f}", flush=True)
                if error:
                    print(error, flush=True)
                for reason, count in load.tally.reasons.most_common(3):
                    print(f"    {count} x {reason}", flush=True)
                print(f"    /health: {load.health.sent} polls, {load.health.failed} not 200", flush=True)
                for reason, count in load.health.reasons.most_common(2):
                    print(f"    {count} x {reason}", flush=True)

            where = "a remote target over SSH" if args.remote else "this machine's engine"
            print(f"{'operation':40} {'sent':>7} {'failed':>7} {'seconds':>8}   ({rate:.0f} requests/s, {where})")
            measured("steady state, no operation (10 s)", lambda: time.sleep(10))
            measured("up v1 -> v2 (every service)", lambda: run("up", "--version", "v2"))
            for s in SERVICES[:2] if args.quick else SERVICES:
                measured(f"rollback {s} (v2 -> v1)", lambda s=s: run("rollback", s))
            if not args.remote:  # the bundle is on the remote host there
                measured(f"{REFERENCE} auth recreated (wave 1)", lambda: recreate(root / ".mfe" / "zd", "auth"))
            # The same up of every service, one at a time as before the waves, then two and four side by side.
            spec = root / "environments" / "zd.yaml"
            for version, parallel in (("v2a", 1), ("v2b", 2), ("v2c", 4)):
                for s in SERVICES:
                    docker_build(f"{PREFIX}/{s}:{version}", f"FROM {PREFIX}/{s}:v2\nLABEL bench.version={version}\n")
                spec.write_text(spec.read_text().split("rollout:")[0] + f"rollout: {{parallel: {parallel}}}\n")
                label = f"{REFERENCE} " if parallel == 1 else ""
                measured(
                    f"{label}up -> {version}, rollout.parallel {parallel}", lambda v=version: run("up", "--version", v)
                )
            if args.quick:
                return _summary(rows)
            broken = 'RUN printf "#!/bin/sh\\nexit 3\\n" > /opt/mfe/bin/mfe-service'  # the entrypoint compose runs
            docker_build(
                f"{PREFIX}/api-gateway:v3", f"FROM {PREFIX}/api-gateway:v1\nUSER 0\n{broken}\nUSER 10001:10001\n"
            )
            for s in SERVICES[1:]:
                docker_build(f"{PREFIX}/{s}:v3", f"FROM {PREFIX}/{s}:v1\nLABEL bench.version=v3\n")
            measured("up v3, gateway exits at start (rolls back)", lambda: run("up", "--version", "v3"))
            for s in SERVICES:
                if s == "profile":
                    wrapper = (
                        "RUN mv /opt/mfe/bin/mfe-service /opt/mfe/bin/mfe-service.real\nCOPY mfe-service /opt/mfe/bin/"
                    )
                    docker_build(
                        f"{PREFIX}/{s}:v4",
                        f"FROM {PREFIX}/{s}:v2\nUSER 0\n{wrapper}\nRUN chmod 755 /opt/mfe/bin/mfe-service\n",
                        {"mfe-service": BROKEN_DATABASE_ENTRYPOINT},
                    )
                else:
                    docker_build(f"{PREFIX}/{s}:v4", f"FROM {PREFIX}/{s}:v2\nLABEL bench.version=v4\n")
            measured(
                "up v4, profile's database password wrong", lambda: run("up", "--version", "v4", "--timeout", "60")
            )
            # v5 is built by `up` itself (no image yet); v6 and v7 exist, so the kill lands later.
            measured("kill -9 of up during the build, then up", lambda: killed_at("... building", "v5"))
            for version in ("v6", "v7"):
                for s in SERVICES:
                    docker_build(f"{PREFIX}/{s}:{version}", f"FROM {PREFIX}/{s}:v2\nLABEL bench.version={version}\n")
            measured("kill -9 of up during migrations, then up", lambda: killed_at("... applying migrations", "v6"))
            measured(
                "kill -9 of up during container start, then up", lambda: killed_at("new container(s) beside", "v7")
            )
        finally:
            subprocess.run([*cli, "down", "--env", "zd", "--volumes", "--yes"], env=env, capture_output=True)
            tags = subprocess.run(
                ["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", f"{PREFIX}/*"],
                capture_output=True,
                text=True,
            ).stdout.split()
            if tags:
                subprocess.run(["docker", "image", "rm", "-f", *tags], capture_output=True)
    _summary(rows)


def recreate(bundle: Path, service: str) -> None:
    """What a rollback was before start-first replacement: compose stops the container and starts a new
    one in its place (`up --force-recreate`), waiting until it is healthy. A reference row: its failures
    are not counted against the goal."""
    compose = [str(REPO / ".venv" / "bin" / "docker-compose"), "-f", str(bundle / "compose.yml")]
    argv = [*compose, "up", "-d", "--no-deps", "--force-recreate", "--wait", service]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


REFERENCE = "reference:"


def _summary(rows: list[tuple[str, int, int, float]]) -> None:
    failed = sum(r[2] for r in rows if not r[0].startswith(REFERENCE))
    print(f"failed requests in all rows: {failed} (goal 0) {'ok' if failed == 0 else 'MISSED'}")


if __name__ == "__main__":
    main()
