"""Scheduled jobs, pure parts: outcomes, history lines, and the cron file and systemd units they install.
The runs themselves, under a real cron daemon, are in test_local_runtime and test_docker_runtime."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import pytest

from mfe_deploy.config.models import Job
from mfe_deploy.ops import jobs as ops

REPORT = Job(service="admin", command="python -m report --since '1 day'", schedule="*/15 2-4 * * 1-5", timeout="10m")


def test_a_command_string_is_split_as_a_shell_would_and_a_list_is_kept() -> None:
    assert REPORT.command == ("python", "-m", "report", "--since", "1 day")
    assert Job(service="admin", command=["a b", "c"], schedule="* * * * *").command == ("a b", "c")


def test_the_command_runs_under_timeout_with_term_then_kill() -> None:
    assert ops.timed(REPORT) == ["timeout", "--kill-after=10", "600", "python", "-m", "report", "--since", "1 day"]
    assert ops.timeout_seconds(Job(service="a1", command="x", schedule="* * * * *", timeout="2d")) == 172800


@pytest.mark.parametrize(
    ("code", "seconds", "expected"),
    [
        (0, 700.0, "succeeded"),  # past the limit but it finished: its own exit code says so
        (1, 1.0, "failed"),
        (124, 600.0, "timed out"),
        (137, 610.0, "timed out"),  # KILL was needed
        (124, 3.0, "failed"),  # the command's own 124 before the limit is its failure, not a timeout
    ],
)
def test_outcome(code: int, seconds: float, expected: str) -> None:
    assert ops.outcome(code, seconds, 600) == expected


def test_history_lines_round_trip_and_a_torn_line_is_dropped() -> None:
    runs = [
        ops.Run("a", "2026-12-06T10:00:00+00:00", 1.5, 0, "succeeded", True),
        ops.Run("b", "2026-12-06T10:01:00+00:00", 0.0, None, "skipped", False),
        ops.Run("a", "2026-12-06T10:02:00+00:00", 2.0, 3, "failed", True),
    ]
    text = "\n".join(r.to_json() for r in runs) + '\n{"job": "a", "started'
    assert ops.parse_history(text) == runs
    assert ops.last_runs(runs) == {"a": runs[2], "b": runs[1]}
    assert [r.failed for r in runs] == [False, False, True]


def test_the_cron_file_runs_each_job_by_name_with_its_log_private() -> None:
    plan = ops.Schedule(
        "prod", Path("/srv/my project"), ("/usr/bin/mfe-deploy",), {"report": REPORT}, Path("/srv/state/jobs")
    )
    text = plan.cron()
    line = text.splitlines()[-1]
    assert line.startswith("*/15 2-4 * * 1-5 root /bin/sh -c ")
    (script,) = shlex.split(line.split(" root ", 1)[1])[2:]
    assert script == (
        "umask 077 && /usr/bin/mfe-deploy --project-dir '/srv/my project' jobs run report --env prod --scheduled"
        " >> /srv/state/jobs/report.log 2>&1"
    )
    assert plan.cron(user=None).splitlines()[-1].startswith("*/15 2-4 * * 1-5 /bin/sh -c ")
    secrets = ops.Schedule("prod", Path("/p"), ("m",), {"report": REPORT}, Path("/l"), Path("/etc/mfe/prod.env"))
    assert "set -a && . /etc/mfe/prod.env && set +a && umask 077" in secrets.cron()


def test_systemd_has_a_service_and_a_timer_per_job() -> None:
    plan = ops.Schedule("prod", Path("/p"), ("m",), {"report": REPORT, "x": REPORT}, Path("/l"))
    units = plan.systemd()
    assert sorted(units) == [
        "mfe-deploy-jobs-prod-report.service",
        "mfe-deploy-jobs-prod-report.timer",
        "mfe-deploy-jobs-prod-x.service",
        "mfe-deploy-jobs-prod-x.timer",
    ]
    assert "OnCalendar=Mon..Fri *-*-* 2..4:0/15:00\n" in units["mfe-deploy-jobs-prod-report.timer"]
    assert "jobs run report --env prod --scheduled" in units["mfe-deploy-jobs-prod-report.service"]


def test_a_job_that_cannot_start_is_in_the_history_and_sends_job_failed(tmp_path: Path) -> None:
    """A scheduled run whose service was never deployed (no variables to run it with) raised before anything
    was written: cron's log held the only trace. It is a run that did not start: in the history with its
    reason, one job.failed, and a non-zero exit."""
    import json

    from tests.local_project import make_local_project
    from tests.receiver import receiver

    jobs = (
        "notify:\n  timeout: 2\n  attempts: 1\n  webhooks:\n    - url: ${JOB_HOOK}\n      events: [job.failed]\n"
        "jobs:\n  nightly:\n    service: admin\n    command: [python3, -c, 'print(1)']\n    schedule: '0 3 * * *'\n"
    )
    with receiver() as hooks:
        p = make_local_project(
            tmp_path / "project", "jns", extra_yaml=jobs, extra_environ={"JOB_HOOK": hooks.url("/j")}
        )
        done = p.cli("jobs", "run", "nightly", "--env", "jns", "--scheduled")
        assert done.returncode == 1, done.stderr
        assert "admin has no environment file yet" in done.stderr and "Traceback" not in done.stderr
        assert "job nightly of jns could not start: admin has no environment file yet" in done.stdout + done.stderr
        runs = json.loads(p.cli("jobs", "history", "--env", "jns", "--json").stdout)
        assert [(r["job"], r["outcome"], r["exit_code"], r["scheduled"]) for r in runs] == [
            ("nightly", "not started", None, True)
        ]
        assert "run `mfe-deploy up --env jns` first" in runs[0]["error"]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not hooks.posts:
            time.sleep(0.1)
        events = [json.loads(post.body) for post in hooks.posts]
        assert [(e["event"], e["details"]["job"], e["details"]["outcome"]) for e in events] == [
            ("job.failed", "nightly", "not started")
        ]
