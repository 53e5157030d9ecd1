"""Issue 32's last acceptance point for `watch`: a steady healthy stack sends nothing for 5 minutes (a real
local stack, a real webhook receiver); then a frozen service is reported, so the silence was a watcher
looking, not a watcher deaf. In the `hosts` group (tests/groups.py): its five minutes run beside the
swarm tests instead of lengthening the longest group."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.local_project import make_local_project
from tests.receiver import receiver
from tests.test_watch import stop

ENV = "wst"
STEADY = float(os.environ.get("MFE_WATCH_STEADY_SECONDS", "300"))


def test_a_steady_stack_sends_nothing_for_five_minutes_then_a_frozen_service_is_one_event(tmp_path: Path) -> None:
    hooks = (
        "notify:\n  timeout: 2\n  attempts: 2\n  webhooks:\n    - url: ${WST_HOOK}\n"
        "      events: [service.unhealthy, service.recovered, service.restarting, backup.stale]\n"
    )
    with receiver() as got:
        p = make_local_project(tmp_path / "project", ENV, extra_yaml=hooks, extra_environ={"WST_HOOK": got.url("/h")})
        up = p.cli("up", "--env", ENV)
        assert up.returncode == 0, up.stderr
        backup = p.cli("backup", "--env", ENV)  # a fresh backup: backup.stale has nothing to say either
        assert backup.returncode == 0, backup.stderr
        argv = [sys.executable, "-m", "mfe_deploy", "-C", str(p.root), "watch", "--env", ENV, "--interval", "3"]
        argv += ["--for", str(STEADY + 60)]
        watcher = subprocess.Popen(argv, env=p.environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        memory = p.root / ".mfe" / ENV / "state" / "watch.json"
        frozen: int | None = None
        try:
            started = time.monotonic()
            looks = 0
            last = None
            while time.monotonic() - started < STEADY:
                time.sleep(3)
                seen = json.loads(memory.read_text())["last"]["time"] if memory.exists() else None
                looks += seen is not None and seen != last
                last = seen
            print(f"steady: {looks} looks over {STEADY:.0f}s, {len(got.posts)} notifications")
            assert got.posts == [], [post.body for post in got.posts]
            assert looks >= STEADY / 10, looks  # the watcher kept looking
            pid = next(
                r["pid"] for r in json.loads(p.cli("status", "--env", ENV, "--json").stdout) if r["name"] == "auth"
            )
            # Frozen, not killed: supervisord restarts a killed auth within a second or two, and a death and
            # restart between two looks is no state the watcher ever sees (CI: no event in 30 s). A frozen
            # process answers nothing until it is thawed: unhealthy at the next look.
            os.kill(pid, signal.SIGSTOP)
            frozen = pid
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not got.posts:
                time.sleep(0.2)
            events = [json.loads(post.body) for post in got.posts]
            assert events and (events[0]["event"], events[0]["details"]["service"]) == ("service.unhealthy", "auth")
        finally:
            if frozen is not None:
                os.kill(frozen, signal.SIGCONT)
            stop(watcher)
            p.cli("down", "--env", ENV, "--volumes", "--yes")
