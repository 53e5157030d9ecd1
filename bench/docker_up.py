"""Docker runtime: a no-op `mfe-deploy up` against a no-op `docker compose up -d --wait` of the same
rendered files (goal <= 1.2x), alternating in one run; and the time of `rollback api-gateway`.

Needs a Docker engine and the stand-in images (scripts/setup-docker).

    .venv/bin/python bench/docker_up.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.conftest import strong_secrets  # noqa: E402
from tests.pg import free_port  # noqa: E402  (one port is never handed out twice in a run)

# Every staging secret the suite sets (tests/conftest.py), but Sentry's: no DSN, no Sentry.
SECRETS = {k: v for k, v in strong_secrets("bench").items() if k.startswith("STAGING_") and "SENTRY" not in k}


def timed(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> float:
    started = time.monotonic()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    sys.path.insert(0, str(REPO / "src"))
    from mfe_deploy.compose import find

    env = {**os.environ, **SECRETS}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "project"
        shutil.copytree(REPO / "environments", root / "environments")
        (root / "environments" / "bench.yaml").write_text(f"""\
extends: staging
runtime: docker
nginx: {{domain: localhost, http_port: {free_port()}, https_port: {free_port()}}}
images: {{postgres: mfe-local/postgres:15, redis: mfe-local/redis:7, rabbitmq: mfe-local/rabbitmq:3,
          nginx: mfe-local/nginx:1.22, service_base: mfe-local/python:3.11, services_prefix: mfe-bench}}
""")
        cli = [sys.executable, "-m", "mfe_deploy", "-C", str(root)]
        try:
            timed([*cli, "up", "--env", "bench", "--version", "b1"], env)
            timed([*cli, "up", "--env", "bench", "--version", "b2"], env)
            bundle = root / ".mfe" / "bench"
            compose = [*find(), "-f", str(bundle / "compose.yml"), "up", "-d", "--wait"]
            ours, raw = [], []
            for _ in range(rounds):
                raw.append(timed(compose, env, cwd=bundle))
                ours.append(timed([*cli, "up", "--env", "bench", "--version", "b2"], env))
            rollback = timed([*cli, "rollback", "api-gateway", "--env", "bench"], env)
        finally:
            subprocess.run([*cli, "down", "--env", "bench", "--volumes", "--yes"], env=env, capture_output=True)
    o, r = statistics.median(ours), statistics.median(raw)
    print(f"docker runtime, no-op up, {rounds} alternating rounds (median seconds)")
    print(f"{'docker compose up -d --wait':30} {r:6.2f}   rounds: {', '.join(f'{x:.2f}' for x in raw)}")
    print(f"{'mfe-deploy up':30} {o:6.2f}   rounds: {', '.join(f'{x:.2f}' for x in ours)}")
    print(f"mfe-deploy / compose = {o / r:.2f}x (goal <= 1.2x) {'ok' if o / r <= 1.2 else 'MISSED'}")
    print(f"rollback api-gateway (b2 -> b1, health-gated): {rollback:.2f} s")


if __name__ == "__main__":
    main()
