"""Runs the suite as groups of test modules side by side, one pytest process each, and sums them up.

Engine tests mostly wait (health polls, drains, rolling updates), so the process and pure tests run beside
them instead of after them. Groups share nothing: each has its own range of ports (MFE_TEST_PORTS, handed
out by tests/pg.py's free_port), its own temporary folder, and its engine objects under its own names; the
two swarm modules share the namespaces of tests/swarm.sh and the two remote-host modules the second
engine's bridge, so each pair is in one group. A new module lands in `rest` unless it is listed here.

usage: python -m tests.groups [--quick] [PYTEST ARGS...]   (scripts/test calls it)
  --quick  the `rest` group only: pure and process tests, no Docker engine needed (the inner loop), as
           QUICK_SPLIT groups side by side (balanced by WEIGHTS): with no engine group beside them, the
           cores are theirs, and most of these tests wait on the servers they start
Prints each group's output as it ends, the 30 slowest tests of all groups, the wall time and a closing
`N passed, N failed, N skipped` line; exits non-zero when any group failed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from tests import leftovers

REPO = Path(__file__).resolve().parents[1]
GROUPS = {
    "docker": [
        "test_docker_runtime.py",
        "test_zero_downtime.py",
        "test_user_services_docker.py",
        "test_workers_docker.py",
        "test_leftovers.py",
    ],
    "hosts": [
        "test_swarm3.py",
        "test_swarm.py",
        "test_remote_deploy.py",
        "test_remote_images.py",
        "test_watch_steady.py",  # five quiet minutes: beside the swarm tests, not in the longest group
    ],
}
# Below the kernel's ephemeral range (32768-60999), and so is each port + 20000, the distribution port
# RabbitMQ takes beside its AMQP port (CI: a node found 48304 taken by a client socket and did not boot).
# Clear of the defaults the tests use as they are (3000-3010, 5432, 6379, 9090).
PORTS = {"docker": "7000-8999", "hosts": "9100-9999", "rest": "10000-12767"}
QUICK_SPLIT = 5
# The `rest` modules of a full run, as this many groups beside the engine groups. One: in one process they are
# the longest group (2,228-2,389 s; docker and hosts 1,608-2,010 s), but split in two beside the engine groups
# (wall 1,863 s) the 2-core machine ran at a load average of 18 and a stack's health probe timed out in a
# docker test (a 503 and no answer in 3 s): the engine tests' timing is worth more than 400 s.
FULL_SPLIT = 1
# Seconds per module of the `rest` group in a --quick run here (the heavy ones; any other counts 5): what
# --quick balances its groups by. Refresh from a run's rest*.xml when they drift far.
WEIGHTS = {
    "test_local_runtime.py": 231,
    "test_backup_local.py": 161,
    "test_services_e2e.py": 127,
    "test_backup_offsite.py": 109,
    "test_user_services.py": 74,
    "test_pitr.py": 73,
    "test_acme.py": 49,
    "test_migrations.py": 43,
    "test_openapi.py": 40,
    "test_redis_acl.py": 32,
    "test_cli.py": 31,
    "test_watch.py": 30,
    "test_metrics.py": 26,
    "test_workers.py": 26,
    "test_events.py": 24,
    "test_services_outages.py": 24,
    "test_secret_providers.py": 24,
    "test_bad_input.py": 22,
    "test_remote_ssh.py": 18,
    "test_init.py": 12,
    "test_gateway_conformance.py": 11,
    "test_gateway_health.py": 8,
}


def modules(quick: bool) -> dict[str, list[str]]:
    listed = {name for files in GROUPS.values() for name in files}
    rest = sorted(p.name for p in (REPO / "tests").glob("test_*.py") if p.name not in listed)
    chosen = balanced(rest, QUICK_SPLIT) if quick else {**GROUPS, **balanced(rest, FULL_SPLIT)}
    return {group: [f"tests/{name}" for name in files] for group, files in chosen.items()}


def balanced(files: list[str], count: int) -> dict[str, list[str]]:
    """`files` in `count` groups of about equal weight (the heaviest first, each to the lightest group)."""
    groups: dict[str, list[str]] = {f"rest{n + 1}": [] for n in range(count)}
    load = dict.fromkeys(groups, 0)
    for name in sorted(files, key=lambda f: (-WEIGHTS.get(f, 5), f)):
        lightest = min(groups, key=lambda g: (load[g], g))
        groups[lightest].append(name)
        load[lightest] += WEIGHTS.get(name, 5)
    return {group: sorted(names) for group, names in groups.items() if names}


def ports(group: str, split: int) -> str:
    """The group's range of ports: each of the `split` groups of `rest` gets its share of the `rest` range."""
    if group in PORTS:
        return PORTS[group]
    low, high = (int(part) for part in PORTS["rest"].split("-"))
    index, size = int(group.removeprefix("rest")) - 1, (high - low + 1) // split
    return f"{low + index * size}-{low + (index + 1) * size - 1}"


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    extra = [arg for arg in argv if arg != "--quick"]
    for line in leftovers.remove(engine=not quick and shutil.which("docker") is not None):
        print(f"== removed what a killed earlier run left: {line}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="mfe-pytest-"))
    started = time.monotonic()
    running: dict[str, tuple[subprocess.Popen[bytes], float]] = {}
    split = QUICK_SPLIT if quick else FULL_SPLIT
    for group, files in modules(quick).items():
        env = {**os.environ, "MFE_TEST_PORTS": ports(group, split), "MFE_TEST_GROUP": group}
        env["MFE_TEST_FIGURES"] = str(work / "figures.txt")  # tests/figures.py: printed in the summary
        argv_ = [sys.executable, "-m", "pytest", *files, *extra, "-p", "no:cacheprovider"]
        argv_ += [f"--basetemp={work / group}", f"--junitxml={work / group}.xml", "-o", "junit_family=xunit1"]
        with (work / f"{group}.log").open("wb") as log:
            running[group] = (subprocess.Popen(argv_, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT), 0.0)
        print(f"== pytest group {group}: {len(files)} modules (ports {ports(group, split)})", flush=True)
    codes: dict[str, int] = {}
    while len(codes) < len(running):
        for group, (proc, _) in running.items():
            if group in codes or proc.poll() is None:
                continue
            codes[group] = proc.returncode
            seconds = time.monotonic() - started
            print(f"\n== pytest group {group}: exit {proc.returncode} after {seconds:.0f} s", flush=True)
            sys.stdout.write((work / f"{group}.log").read_text(errors="replace"))
            sys.stdout.flush()
        time.sleep(0.5)
    return summary(work, codes, time.monotonic() - started)


def summary(work: Path, codes: dict[str, int], wall: float) -> int:
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    cases: list[tuple[float, str]] = []
    for group in codes:
        report = work / f"{group}.xml"
        if not report.exists():
            continue
        for suite in ET.parse(report).getroot().iter("testsuite"):  # noqa: S314 - written by pytest just now
            for key in counts:
                counts[key] += int(suite.get(key, "0"))
            for case in suite.iter("testcase"):
                cases.append((float(case.get("time", "0")), f"{case.get('classname')}::{case.get('name')}"))
    print("\n== the 30 slowest tests (setup, call and teardown; a module's fixtures count in its first test)")
    for seconds, name in sorted(cases, reverse=True)[:30]:
        print(f"{seconds:8.1f} s  {name}")
    figures = work / "figures.txt"
    if figures.exists():
        print("\n== figures the tests measured (tests/figures.py): failed requests under load, /health not 200")
        sys.stdout.write(figures.read_text(errors="replace"))
    failed = counts["failures"] + counts["errors"]
    passed = counts["tests"] - failed - counts["skipped"]
    bad = {group: code for group, code in codes.items() if code not in (0, 5)}
    print(f"\n== wall time {wall:.0f} s; groups: {', '.join(f'{g} exit {c}' for g, c in codes.items())}")
    print(f"{passed} passed, {failed} failed, {counts['skipped']} skipped")
    return 1 if bad or failed or not counts["tests"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
