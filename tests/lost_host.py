"""A host lost under writes (the recover tests and bench/recover.py): writers that record each payment
acknowledged and when, and the loss itself: every process of a local-runtime stack killed at once, its
folders deleted."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from mfe_deploy.local_bundle import LocalLayout
from mfe_deploy.runtimes.local import machine
from tests.local_project import LocalProject


def _descendants(pid: int) -> list[int]:
    """`pid` and every process under it (from /proc), parents first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        found.append(queue.pop(0))
        queue += children.get(found[-1], [])
    return found


def lose_the_host(p: LocalProject) -> float:
    """Every process of the stack killed at once (SIGKILL: nothing flushes, nothing archives a last
    segment), then its project folder, cluster, pgBackRest repository, backups and state deleted: the
    moment it was lost."""
    bundle = (p.root / ".mfe" / p.env).resolve()
    layout = LocalLayout(bundle, machine.pg_outside(bundle) if machine.as_root() else None)
    pid = int((layout.run / "supervisord.pid").read_text())
    lost_at = time.time()
    for each in _descendants(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(each, signal.SIGKILL)
    for folder in (p.root, layout.run, layout.pg_data.parent):
        shutil.rmtree(folder, ignore_errors=True)
    return lost_at


def write_payments(p: LocalProject, stop: threading.Event, acked: list[tuple[str, float]]) -> None:
    """Payments, one after another until told or the host goes: each acknowledged one with its moment."""
    from tests.test_services_e2e import _user

    with p.gateway() as gw:
        _, auth = _user(gw)
        n = 0
        while not stop.is_set():
            key = f"lost-{n}-{time.time_ns()}"
            try:
                done = gw.post(
                    "/api/payments", json={"amount": 10, "currency": "EUR"}, headers={**auth, "Idempotency-Key": key}
                )
            except httpx.HTTPError:
                return  # the host went away
            if done.status_code == 201:
                acked.append((key, time.time()))
            n += 1
            time.sleep(0.05)


@dataclass
class Recovered:
    """What a loss and a recover left: each write acknowledged (key, moment), the keys there after, the
    moment of the loss, recover's run and its seconds."""

    acked: list[tuple[str, float]]
    present: set[str]
    lost_at: float
    recover: subprocess.CompletedProcess[str]
    seconds: float

    @property
    def missing(self) -> list[tuple[str, float]]:
        return [(key, t) for key, t in self.acked if key not in self.present]

    @property
    def point(self) -> float:
        """The recovery point: the loss minus the newest acknowledged write that came back."""
        kept = [t for key, t in self.acked if key in self.present]
        return self.lost_at - max(kept) if kept else float("inf")


def elsewhere(first: LocalProject, root: Path, *files: str) -> LocalProject:
    """A second project folder for the same environment holding only its environment files and `files`
    (a CA), with the same secrets: the machine `recover` runs on."""
    other = LocalProject(root, first.ports, first.environ, first.env, first.layout)
    root.mkdir(parents=True)
    shutil.copytree(first.root / "environments", root / "environments")
    for name in files:
        shutil.copy(first.root / name, root / name)
    return other


def lose_and_recover(first: LocalProject, other: LocalProject, write_seconds: float) -> Recovered:
    """`first` up, written to for `write_seconds`, lost (lose_the_host), then `recover` in `other`; `first`
    is taken down when anything fails before its loss. `other` is the caller's to take down."""
    lost = False
    try:
        up = first.cli("up", "--env", first.env)
        assert up.returncode == 0, up.stdout + up.stderr
        acked: list[tuple[str, float]] = []
        stop = threading.Event()
        writer = threading.Thread(target=write_payments, args=(first, stop, acked), daemon=True)
        writer.start()
        time.sleep(write_seconds)
        lost_at = lose_the_host(first)
        lost = True
        stop.set()
        writer.join(timeout=30)
    finally:
        if not lost:
            first.cli("down", "--env", first.env, "--volumes", "--yes")
    began = time.monotonic()
    done = other.cli("recover", "--env", other.env, "--yes", timeout=900)
    seconds = time.monotonic() - began
    present: set[str] = set()
    if done.returncode == 0:
        database, schema = other.places()["payments"]
        present = set(other.psql(database, f"SELECT idempotency_key FROM {schema}.payments").split())
    return Recovered(acked, present, lost_at, done, seconds)
