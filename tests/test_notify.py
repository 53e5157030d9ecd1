"""Notifications: the pure parts (which events an outcome calls for, the payloads, retries), then the CLI
posting to a real HTTP receiver on loopback; a receiver that fails or is gone changes no exit code."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from mfe_deploy.exec.secret import Secret
from mfe_deploy.notify import Event, Hook, Notifier, events_for, payload
from tests.local_project import LocalProject, make_local_project
from tests.pg import free_port
from tests.receiver import receiver

TOKEN = "T0KEN-in-the-url-9f8e7d6c"


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"action": "up", "result": "ok", "env": "s"}, ["deploy.succeeded"]),
        (
            {"action": "up", "result": "failed", "env": "s", "error": "x", "error_type": "StartFailed"},
            ["deploy.failed"],
        ),
        (
            {"action": "up", "result": "failed", "env": "s", "error": "x", "error_type": "RolledBack"},
            ["deploy.failed", "rollback.automatic"],
        ),
        ({"action": "rollback", "result": "ok", "env": "s"}, ["rollback.succeeded"]),
        ({"action": "restore", "result": "failed", "env": "s"}, ["restore.failed"]),
        ({"action": "backup", "result": "failed", "env": "s"}, ["backup.failed"]),
        ({"action": "backup", "result": "ok", "env": "s"}, []),
        ({"action": "up", "result": "failed", "env": "s", "error": "held", "error_type": "LockHeld"}, []),
        ({"action": "status", "result": "ok", "env": "s"}, []),
    ],
)
def test_which_outcomes_notify(record: dict[str, Any], expected: list[str]) -> None:
    assert [e.name for e in events_for(record)] == expected


def test_payload_formats() -> None:
    event = Event("deploy.failed", "staging", "up of staging failed: boom", {"version": "v2"})
    assert payload("slack", event) == {"text": "[staging] deploy.failed: up of staging failed: boom"}
    assert payload("json", event) == {
        "event": "deploy.failed",
        "env": "staging",
        "summary": "up of staging failed: boom",
        "details": {"version": "v2"},
    }


def test_a_failing_webhook_is_retried_then_reported_without_its_url() -> None:
    calls: list[str] = []
    warnings: list[str] = []

    def send(url: str, body: bytes, timeout: float) -> int:
        calls.append(url)
        return 500 if TOKEN in url else 204

    failing, working = f"https://hooks.example/{TOKEN}", "https://hooks.example/fine"
    hooks = [
        Hook(0, Secret(failing), "slack", frozenset()),
        Hook(1, Secret(working), "json", frozenset({"deploy.failed"})),
    ]
    notifier = Notifier(hooks, timeout=1, attempts=3, warn=warnings.append, send=send, backoff=(0.0,))
    notifier.notify(Event("backup.failed", "s", "backup of s failed"))  # only the first hook wants it
    notifier.drain(5)
    assert calls == [failing] * 3
    assert notifier.results == [(0, "backup.failed", False)]
    assert warnings == ["notify: webhook 1 (slack) did not take backup.failed after 3 attempts (HTTP 500)"]
    notifier.notify(Event("deploy.failed", "s", "x"))
    notifier.drain(5)
    assert sorted(notifier.results[1:]) == [(0, "deploy.failed", False), (1, "deploy.failed", True)]
    assert calls.count(working) == 1


NOTIFY_YAML = """notify:
  timeout: 2
  attempts: 2
  webhooks:
    - url: ${NOTIFY_SLACK_URL}
      format: slack
    - url: ${NOTIFY_JSON_URL}
      format: json
      events: [backup.failed, deploy.failed]
"""


def _project(root: Path, slack: str, generic: str) -> LocalProject:
    return make_local_project(
        root, "ntf", extra_yaml=NOTIFY_YAML, extra_environ={"NOTIFY_SLACK_URL": slack, "NOTIFY_JSON_URL": generic}
    )


def test_notify_test_reaches_every_webhook_and_never_prints_a_url(tmp_path: Path) -> None:
    with receiver() as got:
        p = _project(tmp_path / "p", got.url(f"/slack/{TOKEN}"), got.url(f"/json/{TOKEN}"))
        done = p.cli("notify", "test", "--env", "ntf")
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == ["webhook 1 (slack): delivered", "webhook 2 (json): delivered"]
        assert TOKEN not in done.stdout + done.stderr
        as_json = p.cli("notify", "test", "--env", "ntf", "--json")
        assert json.loads(as_json.stdout) == [
            {"webhook": 1, "format": "slack", "delivered": True},
            {"webhook": 2, "format": "json", "delivered": True},
        ]
        by_path = {post.path.split("/")[1]: json.loads(post.body) for post in got.wait(4)[:2]}
    assert by_path["slack"] == {"text": "[ntf] test: a test notification from mfe-deploy for ntf"}
    assert by_path["json"]["event"] == "test" and by_path["json"]["env"] == "ntf"


def test_a_failed_backup_is_notified_and_keeps_its_exit_code(tmp_path: Path) -> None:
    """The project was never brought up: its PostgreSQL does not answer, so `backup` fails."""
    with receiver() as got:
        p = _project(tmp_path / "p", got.url("/slack"), got.url("/json"))
        done = p.cli("backup", "--env", "ntf")
        assert done.returncode == 1 and "does not answer" in done.stderr
        posts = got.wait(2)
    bodies = {post.path: json.loads(post.body) for post in posts}
    assert bodies["/json"]["event"] == "backup.failed"
    assert "does not answer" in bodies["/json"]["summary"]
    assert bodies["/slack"]["text"].startswith("[ntf] backup.failed: backup of ntf failed")


@pytest.mark.parametrize("receiver_state", ["answers 500", "gone"])
def test_a_broken_receiver_changes_no_exit_code(tmp_path: Path, receiver_state: str) -> None:
    with receiver() as got:
        got.status = 500
        url = got.url(f"/{TOKEN}") if receiver_state == "answers 500" else f"http://127.0.0.1:{free_port()}/{TOKEN}"
        p = _project(tmp_path / "p", url, url)
        started = time.monotonic()
        done = p.cli("backup", "--env", "ntf")
        took = time.monotonic() - started
    assert done.returncode == 1 and "does not answer" in done.stderr
    assert "notify: webhook 1 (slack) did not take backup.failed after 2 attempts" in done.stderr
    assert TOKEN not in done.stdout + done.stderr
    assert took < 30
    if receiver_state == "answers 500":
        assert len(got.posts) == 4  # two webhooks, two attempts each


@pytest.mark.parametrize(
    ("url", "why"),
    [
        (f"http://127.0.0.1:9/hook/{TOKEN} x", "InvalidURL"),  # review finding 8: its traceback printed the path
        (f"http://127.0.0.1:9/hook/{TOKEN}\u00e9", "UnicodeEncodeError"),
        (f"http://127.0.0.1:9/hook/{TOKEN}", "Connection refused"),
    ],
)
def test_no_delivery_error_shows_the_url(url: str, why: str, capfd: pytest.CaptureFixture[str]) -> None:
    warnings: list[str] = []
    notifier = Notifier([Hook(0, Secret(url), "json", frozenset())], timeout=1, attempts=1, warn=warnings.append)
    notifier.notify(Event("backup.failed", "s", "x"))
    notifier.drain(5)
    out, err = capfd.readouterr()
    assert warnings == [f"notify: webhook 1 (json) did not take backup.failed after 1 attempts ({why})"]
    assert TOKEN not in out + err + "".join(warnings)
