"""A host lost under writes (the recover tests and bench/recover.py): writers that record each payment
acknowledged and when, and the loss itself: every process of a local-runtime stack killed at once, its
folders deleted."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time
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
