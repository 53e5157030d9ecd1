"""The scheduled job (backup, verify, prune) as a cron entry or a systemd service + timer. Pure text."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mfe_deploy import calendar


@dataclass(frozen=True)
class Job:
    env: str
    project_dir: Path
    executable: tuple[str, ...]  # the mfe-deploy script, or (python, -m, mfe_deploy)
    schedule: str  # 5-field cron
    env_file: Path | None = None  # where the job reads its secrets (KEY=value lines, 0600)

    @property
    def name(self) -> str:
        return f"mfe-deploy-backup-{self.env}"

    def timer(self) -> calendar.Timer:
        return calendar.Timer(
            name=self.name,
            schedule=self.schedule,
            project_dir=self.project_dir,
            executable=self.executable,
            runs=(
                ("backup", "--env", self.env, "--verify", "--kind", "scheduled"),
                ("backup", "prune", "--env", self.env, "--yes"),
            ),
            summary=f"backup, verify and prune the {self.env} environment",
            origin="mfe-deploy backup schedule",
            service_description=f"backup, verify and prune {self.env}",
            timer_description=f"scheduled backup of {self.env}",
            env_file=self.env_file,
        )

    def commands(self) -> list[list[str]]:
        return self.timer().commands()


def cron(job: Job, user: str | None = "root") -> str:
    """An /etc/cron.d file (with a user column), or a crontab line when user is None."""
    return calendar.cron(job.timer(), user)


def systemd(job: Job) -> dict[str, str]:
    """The unit files by name: a oneshot service and its timer (Persistent: a missed run runs at boot)."""
    return calendar.systemd(job.timer())
