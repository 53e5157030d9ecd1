"""The scheduled job (backup, verify, prune) as a cron entry or a systemd service + timer. Pure text."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from mfe_deploy.calendar import on_calendar


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

    def commands(self) -> list[list[str]]:
        base = [*self.executable, "--project-dir", str(self.project_dir)]
        return [
            [*base, "backup", "--env", self.env, "--verify", "--kind", "scheduled"],
            [*base, "backup", "prune", "--env", self.env, "--yes"],
        ]


def cron(job: Job, user: str | None = "root") -> str:
    """An /etc/cron.d file (with a user column), or a crontab line when user is None."""
    script = " && ".join(shlex.join(c) for c in job.commands())
    if job.env_file is not None:
        script = f"set -a && . {shlex.quote(str(job.env_file))} && set +a && {script}"
    line = f"{job.schedule} {user + ' ' if user else ''}/bin/sh -c {shlex.quote(script)}"
    return (
        f"# {job.name}: backup, verify and prune the {job.env} environment (mfe-deploy backup schedule)\n"
        "SHELL=/bin/sh\nPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
        f"{line}\n"
    )


def systemd(job: Job) -> dict[str, str]:
    """The unit files by name: a oneshot service and its timer (Persistent: a missed run runs at boot)."""
    env_file = f"EnvironmentFile={job.env_file}\n" if job.env_file else ""
    exec_lines = "".join(f"ExecStart={shlex.join(c)}\n" for c in job.commands())
    service = (
        "[Unit]\n"
        f"Description=mfe-deploy: backup, verify and prune {job.env}\n"
        "After=network-online.target docker.service\n\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"WorkingDirectory={job.project_dir}\n"
        f"{env_file}{exec_lines}"
    )
    timer = (
        "[Unit]\n"
        f"Description=mfe-deploy: scheduled backup of {job.env}\n\n"
        "[Timer]\n"
        f"OnCalendar={on_calendar(job.schedule)}\n"
        "Persistent=true\n"
        "RandomizedDelaySec=60\n\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    )
    return {f"{job.name}.service": service, f"{job.name}.timer": timer}
