"""Cold `mfe-deploy up` (local runtime) against the same processes started by hand, in sequence, in the
same run; and the time of a no-op `up`. Goal: cold up <= 1.3x of by hand.

By hand means what a careful person types: initdb, start PostgreSQL and wait, create the roles and
databases (the same script), apply each service's migrations, start Redis, start the five services
one after the other and wait for each /health. Rounds alternate so that noise hits both sides.

    .venv/bin/python bench/local_up.py [--rounds 2]
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
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))

from tests.pg import free_port  # noqa: E402  (one port is never handed out twice in a run)

from mfe_deploy.binaries import find_pg  # noqa: E402
from mfe_deploy.config import loader  # noqa: E402
from mfe_deploy.exec.secret import Secret  # noqa: E402
from mfe_deploy.render import Endpoints, environments, render  # noqa: E402

SERVICES = ("auth", "payments", "admin", "profile", "api-gateway")
ROOT = os.geteuid() == 0
AS_PG = ["runuser", "-u", "mfe-postgres", "--"] if ROOT else []


def project(base: Path, database: str = "") -> tuple[Path, dict[str, int]]:
    """A development-based `bench` environment on free ports; `database`: more lines for its database key."""
    root = base / "project"
    shutil.copytree(REPO / "environments", root / "environments")
    ports = {name: free_port() for name in (*SERVICES, "postgres", "redis")}
    services = "".join(f"  {n}:\n    port: {ports[n]}\n" for n in SERVICES)
    (root / "environments" / "bench.yaml").write_text(
        f"extends: development\nruntime: local\nservices:\n{services}database:\n{database}"
        f"  port: {ports['postgres']}\nredis:\n  port: {ports['redis']}\n"
    )
    return root, ports


def cli(root: Path, *args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "mfe_deploy", "-C", str(root), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"mfe-deploy {' '.join(args)} failed:\n{done.stderr}")


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - loopback
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} not healthy")


def by_hand(base: Path) -> tuple[float, list[subprocess.Popen[bytes]], Path, Path]:
    root, ports = project(base)
    loaded, secrets = loader.load_with_secrets(root, "bench", environ=dict(os.environ))
    env = loaded.env
    units = environments(env, secrets, Endpoints.local(env))
    plain = {u: {k: (v.reveal() if isinstance(v, Secret) else str(v)) for k, v in vs} for u, vs in units.items()}
    pg_bin, data = find_pg(None), base / "pgdata"
    pw = base / "pw"
    pw.write_text(secrets.postgres_password.reveal())
    if ROOT:
        shutil.chown(pw, "mfe-postgres")
    started = time.monotonic()
    subprocess.run(
        [
            *AS_PG,
            str(pg_bin / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            f"--pwfile={pw}",
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *AS_PG,
            str(pg_bin / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(base / "pg.log"),
            "-w",
            "-o",
            f"-p {ports['postgres']} -c listen_addresses=127.0.0.1 -c unix_socket_directories=",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    psql = [
        str(pg_bin / "psql"),
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        "127.0.0.1",
        "-p",
        str(ports["postgres"]),
        "-U",
        "postgres",
    ]
    pgenv = {**os.environ, **plain["postgres"], "PGPASSWORD": secrets.postgres_password.reveal()}
    subprocess.run(
        [*psql, "-d", "postgres", "-c", f"CREATE DATABASE {plain['postgres']['POSTGRES_DB']}"],
        env=pgenv,
        check=True,
        capture_output=True,
    )
    script = render(env, secrets).files["initdb/10-databases.sql"].text
    subprocess.run(
        [*psql, "-d", plain["postgres"]["POSTGRES_DB"], "-f", "-"],
        input=script.encode(),
        env=pgenv,
        check=True,
        capture_output=True,
    )
    for name in ("auth", "payments", "admin", "profile"):
        subprocess.run(
            [sys.executable, "-m", "mfe_services.migrate", "--service", name, "apply"],
            env={**os.environ, "DATABASE_URL": plain[name]["DATABASE_URL"]},
            check=True,
            capture_output=True,
        )
    procs = [
        subprocess.Popen(
            ["redis-server", "--port", str(ports["redis"]), "--bind", "127.0.0.1", "--save", "", "--dir", str(base)],
            stdout=subprocess.DEVNULL,
        )
    ]
    for name in SERVICES:
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "mfe_services", name],
                env={**os.environ, **plain[name], "HOST": "127.0.0.1"},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_http(f"http://127.0.0.1:{ports[name]}/health")
    return time.monotonic() - started, procs, data, pg_bin


def stop_by_hand(procs: list[subprocess.Popen[bytes]], data: Path, pg_bin: Path) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(timeout=30)
    subprocess.run([*AS_PG, str(pg_bin / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)


def tool(base: Path) -> tuple[float, float, Path]:
    root, _ = project(base)
    started = time.monotonic()
    cli(root, "up", "--env", "bench")
    cold = time.monotonic() - started
    started = time.monotonic()
    cli(root, "up", "--env", "bench")
    return cold, time.monotonic() - started, root


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    rounds = parser.parse_args().rounds
    if ROOT:
        subprocess.run(["useradd", "--system", "--no-create-home", "mfe-postgres"], capture_output=True)
    hand, cold, noop = [], [], []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            base = Path(tmp)
            base.chmod(0o755)  # both sides keep PostgreSQL data under a folder its user can reach
            if ROOT:
                shutil.chown(base, "mfe-postgres")
            seconds, procs, data, pg_bin = by_hand(base)
            hand.append(seconds)
            stop_by_hand(procs, data, pg_bin)
        with tempfile.TemporaryDirectory() as tmp:
            base = Path(tmp)
            base.chmod(0o755)
            c, n, root = tool(base)
            cold.append(c)
            noop.append(n)
            cli(root, "down", "--env", "bench", "--volumes", "--yes")
    h, c, n = statistics.median(hand), statistics.median(cold), statistics.median(noop)
    print(f"local runtime, {rounds} alternating rounds (median seconds)")
    print(f"{'by hand, in sequence':28} {h:7.2f}   rounds: {', '.join(f'{x:.2f}' for x in hand)}")
    print(f"{'mfe-deploy up (cold)':28} {c:7.2f}   rounds: {', '.join(f'{x:.2f}' for x in cold)}")
    print(f"{'mfe-deploy up (no-op)':28} {n:7.2f}   rounds: {', '.join(f'{x:.2f}' for x in noop)}")
    print(f"cold up / by hand = {c / h:.2f}x (goal <= 1.3x) {'ok' if c / h <= 1.3 else 'MISSED'}")


if __name__ == "__main__":
    main()
