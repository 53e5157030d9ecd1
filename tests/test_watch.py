"""`mfe-deploy watch`: one notification per change, never one per look. The pure rules on looks, then a
real local stack whose service process is killed under a running watch, with a real webhook receiver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mfe_deploy.ops.watch import LOOP_RESTARTS, Look, Memory, changes
from tests.local_project import make_local_project
from tests.receiver import receiver


def look(t: float, healthy: dict[str, bool], pids: dict[str, int | None], stale: str | None = None) -> Look:
    return Look(t, healthy, pids, stale)


def names(memory: Memory, seen: Look) -> list[str]:
    return [c.name for c in changes(memory, seen, "e")]


def test_each_change_is_one_event_and_a_steady_state_none() -> None:
    m = Memory()
    assert names(m, look(0, {"a": True, "b": True}, {"a": 1, "b": 2})) == []
    assert names(m, look(1, {"a": True, "b": True}, {"a": 1, "b": 2})) == []
    assert names(m, look(2, {"a": False, "b": True}, {"a": 1, "b": 2})) == ["service.unhealthy"]
    assert names(m, look(3, {"a": False, "b": True}, {"a": None, "b": 2})) == []  # still down: no second one
    assert names(m, look(4, {"a": True, "b": True}, {"a": 7, "b": 2})) == ["service.recovered"]
    assert names(m, look(5, {"a": True, "b": True}, {"a": 7, "b": 2})) == []


def test_a_process_replaced_between_two_looks_was_down_and_is_reported_once_each_way() -> None:
    m = Memory()
    changes(m, look(0, {"a": True}, {"a": 1}), "e")
    assert names(m, look(1, {"a": True}, {"a": 2})) == ["service.unhealthy"]
    assert names(m, look(2, {"a": True}, {"a": 2})) == ["service.recovered"]


def test_a_look_across_a_restart_is_down_even_if_its_probe_came_first() -> None:
    """The probe answered before the kill, the process id was read while the new one was starting (None)."""
    m = Memory()
    changes(m, look(0, {"a": True}, {"a": 1}), "e")
    assert names(m, look(1, {"a": True}, {"a": None})) == ["service.unhealthy"]
    assert names(m, look(2, {"a": True}, {"a": 2})) == ["service.recovered"]
    assert names(m, look(3, {"b": True}, {})) == []  # no process ids (containers): health alone


def test_a_restart_loop_is_one_event_until_it_ends() -> None:
    m = Memory()
    changes(m, look(0, {"a": True}, {"a": 1}), "e")
    seen = []
    for n in range(1, 8):
        seen += names(m, look(n * 10, {"a": True}, {"a": 100 + n}))
    assert seen.count("service.restarting") == 1 and LOOP_RESTARTS <= 7
    quiet = names(m, look(1000, {"a": True}, {"a": 107}))
    assert "service.restarting" not in quiet


def test_backups_going_stale_is_one_event_and_memory_survives_a_file() -> None:
    m = Memory()
    assert names(m, look(0, {"a": True}, {"a": 1}, "no complete backup exists")) == ["backup.stale"]
    again = Memory.from_json(m.to_json())
    assert names(again, look(1, {"a": True}, {"a": 1}, "no complete backup exists")) == []
    assert names(again, look(2, {"a": True}, {"a": 1})) == []
    assert names(again, look(3, {"a": True}, {"a": 1}, "older than 26 h")) == ["backup.stale"]


def test_a_killed_service_under_watch_is_one_unhealthy_then_one_recovered(tmp_path: Path) -> None:
    hooks = "notify:\n  timeout: 2\n  attempts: 2\n  webhooks:\n    - url: ${WCH_HOOK}\n      events: [service.unhealthy, service.recovered, service.restarting]\n"
    with receiver() as got:
        p = make_local_project(tmp_path / "project", "wch", extra_yaml=hooks, extra_environ={"WCH_HOOK": got.url("/h")})
        up = p.cli("up", "--env", "wch")
        assert up.returncode == 0, up.stderr
        watcher = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mfe_deploy",
                "-C",
                str(p.root),
                "watch",
                "--env",
                "wch",
                "--interval",
                "0.3",
                "--for",
                "300",  # stopped by the test (finally): a busy CI host took over 40 s to reach the kill
            ],
            env=p.environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # The watcher's first look must come before the kill: a watcher still starting (a busy CI host took
            # over 4 s) would first see the process already replaced and healthy, with nothing to compare.
            memory_file = p.root / ".mfe" / "wch" / "state" / "watch.json"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not memory_file.exists() and watcher.poll() is None:
                time.sleep(0.1)
            first = memory_file.read_text()  # every look rewrites it
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and memory_file.read_text() == first:
                time.sleep(0.1)
            time.sleep(1)  # more looks of a steady stack: nothing is sent
            assert got.posts == []
            pid = next(
                r["pid"] for r in json.loads(p.cli("status", "--env", "wch", "--json").stdout) if r["name"] == "profile"
            )
            assert watcher.poll() is None, watcher.communicate()  # still looking when the service dies
            os.kill(pid, signal.SIGKILL)  # supervisord starts it again
            deadline = time.monotonic() + 60  # a look on a busy host takes seconds
            while time.monotonic() < deadline and len(got.posts) < 2:
                time.sleep(0.2)
            time.sleep(2)  # and nothing more comes
            events = [json.loads(post.body) for post in got.posts]
            said = [(e["event"], e["details"]["service"]) for e in events]
            if said != [("service.unhealthy", "profile"), ("service.recovered", "profile")]:
                out, err = stop(watcher)  # what the watcher saw and said, to tell why
                now = {r["name"]: r["pid"] for r in json.loads(p.cli("status", "--env", "wch", "--json").stdout)}
                pytest.fail(
                    f"{events}\nkilled profile's pid {pid}; the pids now: {now}\nwatch.json: {memory_file.read_text()}"
                    f"\nstdout: {out[-3000:]}\nstderr: {err[-3000:]}"
                )
        finally:
            stop(watcher)
            p.cli("down", "--env", "wch", "--volumes", "--yes")


def stop(watcher: subprocess.Popen[str]) -> tuple[str, str]:
    """A running `watch` ended as an operator ends it (Ctrl-C), killed if it does not go within 20 s: what it
    printed (nothing more once it was stopped)."""
    if watcher.poll() is not None and watcher.stdout is not None and watcher.stdout.closed:
        return "", ""
    watcher.send_signal(signal.SIGINT)
    try:
        return watcher.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        watcher.kill()
        return watcher.communicate()
