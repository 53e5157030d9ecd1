"""The audit log records an action when it starts: one killed midway is in `history` as interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from mfe_deploy.exec.host import LocalFiles
from mfe_deploy.state.audit import audited, history
from mfe_deploy.state.ledger import read_lines

KILLED_MIDWAY = """
import sys, time
from pathlib import Path
from mfe_deploy.exec.host import LocalFiles
from mfe_deploy.state.audit import audited
with audited(LocalFiles(), Path(sys.argv[1]), "up", "staging", {"version": "v2"}):
    print("inside", flush=True)
    time.sleep(60)
"""


def test_a_killed_action_shows_as_interrupted_and_a_finished_one_once(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    with audited(LocalFiles(), log, "migrate", "staging", {}) as record:
        record["applied"] = ["auth:0003_x"]
    victim = subprocess.Popen([sys.executable, "-c", KILLED_MIDWAY, str(log)], stdout=subprocess.PIPE, text=True)
    assert victim.stdout is not None and victim.stdout.readline() == "inside\n"
    running = history(read_lines(LocalFiles(), log))
    assert [(h["action"], h["result"]) for h in running] == [("migrate", "ok"), ("up", "running")]
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    victim.stdout.close()
    entries = history(read_lines(LocalFiles(), log))
    assert [(h["action"], h["result"]) for h in entries] == [("migrate", "ok"), ("up", "interrupted")]
    assert entries[0]["applied"] == ["auth:0003_x"] and entries[1]["version"] == "v2"
    assert len(log.read_text().splitlines()) == 3  # started + ok for migrate, started for up
    assert all("op" in json.loads(line) for line in log.read_text().splitlines())
