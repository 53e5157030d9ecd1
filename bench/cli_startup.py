"""CLI start-up cost against the floor every Typer CLI pays: a Typer hello-world `--help`.

Runs are interleaved (floor, ours, floor, ours, ...) so that the noise of this shared machine hits both
sides alike, and the ratio of medians is printed. Goals: `--help` <= 1.3x, `render --env production` <= 2x.

    .venv/bin/python bench/cli_startup.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HELLO = """\
import typer

app = typer.Typer()


@app.command()
def hello(name: str = "world") -> None:
    print(f"hello {name}")


if __name__ == "__main__":
    app()
"""
SECRETS = (
    "POSTGRES_PASSWORD",
    "RABBITMQ_PASSWORD",
    "REDIS_PASSWORD",
    "AUTH_DB_PASSWORD",
    "PAYMENTS_DB_PASSWORD",
    "ADMIN_DB_PASSWORD",
    "PROFILE_DB_PASSWORD",
)


def _time(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    env = dict(os.environ)
    env.update({f"PRODUCTION_{name}": f"bench-{name.lower()}-0123456789abcdef0123456789" for name in SECRETS})
    env["PRODUCTION_JWT_KEY"] = "bench:bench-jwt-key-0123456789abcdef0123456789abc"
    with tempfile.TemporaryDirectory() as tmp:
        hello = Path(tmp) / "hello.py"
        hello.write_text(HELLO)
        cli = [sys.executable, "-m", "mfe_deploy", "-C", str(REPO)]
        commands = {
            "typer hello --help": [sys.executable, str(hello), "--help"],
            "mfe-deploy --help": [*cli, "--help"],
            "mfe-deploy render --env production": [
                *cli,
                "render",
                "--env",
                "production",
                "--out",
                f"{tmp}/out",
            ],
        }
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for argv in commands.values():  # warm the page cache and .pyc files
            _time(argv, env)
        for _ in range(runs):
            for name, argv in commands.items():
                samples[name].append(_time(argv, env))
    floor = statistics.median(samples["typer hello --help"])
    goals = {"mfe-deploy --help": 1.3, "mfe-deploy render --env production": 2.0}
    print(f"{'command':38} {'median ms':>10} {'vs floor':>9} {'goal':>6}")
    for name, values in samples.items():
        median = statistics.median(values)
        goal = goals.get(name)
        verdict = "" if goal is None else ("ok" if median / floor <= goal else "MISSED")
        goal_text = f"<={goal}x" if goal else ""
        print(f"{name:38} {median * 1000:10.1f} {median / floor:8.2f}x {goal_text:>6} {verdict}")


if __name__ == "__main__":
    main()
