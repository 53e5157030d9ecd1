"""Scheduled jobs: what a run's outcome is, the history line it leaves, and the cron file or systemd units
that start `mfe-deploy jobs run` on each job's schedule. Pure: values and text."""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from mfe_deploy.calendar import on_calendar
from mfe_deploy.config.models import Job

Outcome = Literal["succeeded", "failed", "timed out", "skipped", "not started"]
KILL_AFTER = 10  # seconds between TERM and KILL once a run is past its timeout
TIMED_OUT = (124, 137)  # coreutils timeout: TERM sufficed, or KILL was needed
HISTORY_KEEP = 1000  # runs kept in the history file; older ones dropped when it doubles


@dataclass(frozen=True)
class Run:
    job: str
    started_at: str  # ISO 8601, UTC
    seconds: float
    exit_code: int | None  # None: skipped, never started
    outcome: Outcome
    scheduled: bool
    error: str | None = None  # why a run did not start (its service never deployed, no image, ...)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> Run | None:
        """A history line, or None for one that is not (a torn last line after a crash)."""
        try:
            raw = json.loads(line)
            return cls(
                str(raw["job"]),
                str(raw["started_at"]),
                float(raw["seconds"]),
                None if raw["exit_code"] is None else int(raw["exit_code"]),
                raw["outcome"],
                bool(raw["scheduled"]),
                None if raw.get("error") is None else str(raw["error"]),
            )
        except (ValueError, KeyError, TypeError):
            return None

    @property
    def failed(self) -> bool:
        return self.outcome in ("failed", "timed out", "not started")


def timeout_seconds(job: Job) -> int:
    value, unit = int(job.timeout[:-1]), job.timeout[-1]
    return value * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


def timed(job: Job) -> list[str]:
    """The job's command under coreutils' timeout (in the service's container or on this machine): TERM at
    the timeout, so the command may finish what it holds, KILL KILL_AFTER seconds later."""
    return ["timeout", f"--kill-after={KILL_AFTER}", str(timeout_seconds(job)), *job.command]


def outcome(exit_code: int, seconds: float, limit: int) -> Outcome:
    if exit_code == 0:
        return "succeeded"
    if exit_code in TIMED_OUT and seconds >= limit:
        return "timed out"
    return "failed"


def parse_history(text: str) -> list[Run]:
    return [run for line in text.splitlines() if line.strip() and (run := Run.from_json(line)) is not None]


def last_runs(runs: Sequence[Run]) -> dict[str, Run]:
    latest: dict[str, Run] = {}
    for run in runs:
        latest[run.job] = run
    return latest


def summary(env: str, run: Run, limit: int) -> str:
    if run.outcome == "timed out":
        return f"job {run.job} of {env} ran past its timeout of {limit}s and was stopped"
    if run.outcome == "not started":
        return f"job {run.job} of {env} could not start: {run.error}"
    return f"job {run.job} of {env} failed with exit code {run.exit_code} after {run.seconds:.1f}s"


@dataclass(frozen=True)
class Schedule:
    """What `jobs schedule` installs: one line (or one service and timer) per job, each calling
    `jobs run NAME --scheduled` with its output appended to the job's log file."""

    env: str
    project_dir: Path
    executable: tuple[str, ...]  # the mfe-deploy script, or (python, -m, mfe_deploy)
    jobs: Mapping[str, Job]
    log_dir: Path
    env_file: Path | None = None  # KEY=value lines the runs read their secrets from

    @property
    def name(self) -> str:
        return f"mfe-deploy-jobs-{self.env}"

    def command(self, job: str) -> list[str]:
        base = [*self.executable, "--project-dir", str(self.project_dir)]
        return [*base, "jobs", "run", job, "--env", self.env, "--scheduled"]

    def _script(self, job: str) -> str:
        log = shlex.quote(str(self.log_dir / f"{job}.log"))
        script = f"umask 077 && {shlex.join(self.command(job))} >> {log} 2>&1"
        if self.env_file is not None:
            script = f"set -a && . {shlex.quote(str(self.env_file))} && set +a && {script}"
        return script

    def cron(self, user: str | None = "root") -> str:
        """An /etc/cron.d file (with a user column), or crontab lines when user is None."""
        lines = [
            f"# {self.name}: the scheduled jobs of the {self.env} environment (mfe-deploy jobs schedule)",
            "SHELL=/bin/sh",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ]
        for name, job in self.jobs.items():
            who = f"{user} " if user else ""
            lines.append(f"{job.schedule} {who}/bin/sh -c {shlex.quote(self._script(name))}")
        return "\n".join(lines) + "\n"

    def systemd(self) -> dict[str, str]:
        """A oneshot service and a timer per job (no Persistent: a missed run is not run late at boot)."""
        units: dict[str, str] = {}
        for name, job in self.jobs.items():
            unit = f"{self.name}-{name}"
            units[f"{unit}.service"] = (
                "[Unit]\n"
                f"Description=mfe-deploy: job {name} of {self.env}\n"
                "After=network-online.target docker.service\n\n"
                "[Service]\n"
                "Type=oneshot\n"
                f"WorkingDirectory={self.project_dir}\n"
                f"ExecStart=/bin/sh -c {shlex.quote(self._script(name))}\n"
            )
            units[f"{unit}.timer"] = (
                "[Unit]\n"
                f"Description=mfe-deploy: schedule of job {name} of {self.env}\n\n"
                "[Timer]\n"
                f"OnCalendar={on_calendar(job.schedule)}\n\n"
                "[Install]\n"
                "WantedBy=timers.target\n"
            )
        return units
