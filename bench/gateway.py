"""Gateway throughput against the service it fronts, same machine, same load generator, same run.

Starts the auth service and the api-gateway (uvicorn, as deployed), then runs wrk (1 thread,
32 connections) against `GET /api/auth/version` directly and through the gateway, alternating
rounds so that the machine's noise hits both sides. Prints requests/s, p99 and the ratio. Both run as
deployed, at log level info: every request writes its JSON access line (one on the direct path, two
through the gateway) and counts in /metrics. Goal: gateway >= 0.6x of direct.

    .venv/bin/python bench/gateway.py [--seconds 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import jwt_env
from tests.pg import free_port

PATH = "/api/auth/version"


def start(name: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "mfe_services", name], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def wait(url: str) -> None:
    for _ in range(100):
        try:
            urllib.request.urlopen(url, timeout=1).close()  # noqa: S310 - loopback
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def wrk(url: str, seconds: int) -> tuple[float, float]:
    out = subprocess.run(
        ["wrk", "-t1", "-c32", f"-d{seconds}s", "--latency", url], capture_output=True, text=True, check=True
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    p99_ms = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{errors[1]} failed responses from {url}")
    return rps, p99_ms


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install wrk (scripts/setup-system installs it)")
    auth_port, gw_port = free_port(), free_port()
    common = {
        "PATH": os.environ["PATH"],
        "HOST": "127.0.0.1",
        "JWT_PUBLIC_KEYS": jwt_env()["JWT_PUBLIC_KEYS"],
        "LOG_LEVEL": "info",
        "EVENT_HUB": "redis",
        "REDIS_URL": "redis://127.0.0.1:1/0",
    }
    with tempfile.TemporaryDirectory() as tmp:
        procs = [
            start("auth", {**common, **jwt_env(), "PORT": str(auth_port)}, Path(tmp) / "auth.log"),
            start(
                "api-gateway",
                {**common, "PORT": str(gw_port), "AUTH_SERVICE_URL": f"http://127.0.0.1:{auth_port}"},
                Path(tmp) / "gw.log",
            ),
        ]
        try:
            direct_url, gateway_url = (
                f"http://127.0.0.1:{auth_port}{PATH}",
                f"http://127.0.0.1:{gw_port}{PATH}",
            )
            wait(direct_url)
            wait(gateway_url)
            wrk(direct_url, 2)  # warm-up of both paths
            wrk(gateway_url, 2)
            results: dict[str, list[tuple[float, float]]] = {"direct": [], "gateway": []}
            for _ in range(args.rounds):
                results["direct"].append(wrk(direct_url, args.seconds))
                results["gateway"].append(wrk(gateway_url, args.seconds))
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=20)
    print(f"wrk -t1 -c32 -d{args.seconds}s GET {PATH}, {args.rounds} alternating rounds (median)")
    print(f"{'path':10} {'requests/s':>12} {'p99 ms':>8}")
    medians = {}
    for name, rows in results.items():
        rps = statistics.median(r for r, _ in rows)
        p99 = statistics.median(p for _, p in rows)
        medians[name] = rps
        print(f"{name:10} {rps:12.0f} {p99:8.2f}   rounds: {', '.join(f'{r:.0f}' for r, _ in rows)}")
    ratio = medians["gateway"] / medians["direct"]
    print(f"gateway / direct = {ratio:.2f}x (goal >= 0.6x) {'ok' if ratio >= 0.6 else 'MISSED'}")


if __name__ == "__main__":
    main()
