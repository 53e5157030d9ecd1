"""Cron schedules as systemd's OnCalendar, and the recurring runs (`backup schedule`, `tls schedule`,
`watch schedule`) as a cron file or systemd units. Pure text."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from mfe_deploy.config.models import CRON_FIELD

_DAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def on_calendar(schedule: str) -> str:
    """Cron's five fields as systemd's OnCalendar (numbers, lists, ranges and steps)."""
    fields = schedule.split()
    if len(fields) != 5 or not all(CRON_FIELD.fullmatch(f) for f in fields):
        raise ValueError(f"cannot translate {schedule!r} to systemd: use numbers, *, lists, ranges and steps")
    minute, hour, dom, month, dow = (f.replace("-", "..") if not f.startswith("*/") else f for f in fields)

    def step(value: str) -> str:
        return value.replace("*/", "0/") if value.startswith("*/") else value

    days = ""
    if dow != "*":
        names = []
        for part in dow.split(","):
            if ".." in part:
                lo, hi = part.split("..")
                names.append(f"{_DAYS[int(lo)]}..{_DAYS[int(hi)]}")
            else:
                names.append(_DAYS[int(part)])
        days = ",".join(names) + " "
    dom = dom if dom != "*" else "*"
    return f"{days}*-{step(month)}-{step(dom)} {step(hour)}:{step(minute)}:00"


@dataclass(frozen=True)
class Timer:
    """A recurring mfe-deploy run as an /etc/cron.d file or a systemd oneshot service with its timer: the
    commands (each mfe-deploy's arguments), when, and the words its files carry."""

    name: str
    schedule: str  # 5-field cron
    project_dir: Path
    executable: tuple[str, ...]  # the mfe-deploy script, or (python, -m, mfe_deploy)
    runs: tuple[tuple[str, ...], ...]  # each: mfe-deploy's arguments after --project-dir
    summary: str  # the cron file's first line
    origin: str  # the command that wrote it
    service_description: str
    timer_description: str
    env_file: Path | None = None  # KEY=value lines the runs read their secrets from (0600)

    def commands(self) -> list[list[str]]:
        base = [*self.executable, "--project-dir", str(self.project_dir)]
        return [[*base, *run] for run in self.runs]


def cron(timer: Timer, user: str | None = "root") -> str:
    """An /etc/cron.d file (with a user column), or a crontab line when user is None."""
    script = " && ".join(shlex.join(c) for c in timer.commands())
    if timer.env_file is not None:
        script = f"set -a && . {shlex.quote(str(timer.env_file))} && set +a && {script}"
    line = f"{timer.schedule} {user + ' ' if user else ''}/bin/sh -c {shlex.quote(script)}"
    return (
        f"# {timer.name}: {timer.summary} ({timer.origin})\n"
        "SHELL=/bin/sh\nPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
        f"{line}\n"
    )


def systemd(timer: Timer) -> dict[str, str]:
    """The unit files by name: a oneshot service and its timer (Persistent: a missed run runs at boot)."""
    env_file = f"EnvironmentFile={timer.env_file}\n" if timer.env_file else ""
    exec_lines = "".join(f"ExecStart={shlex.join(c)}\n" for c in timer.commands())
    service = (
        "[Unit]\n"
        f"Description=mfe-deploy: {timer.service_description}\n"
        "After=network-online.target docker.service\n\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"WorkingDirectory={timer.project_dir}\n"
        f"{env_file}{exec_lines}"
    )
    units = (
        "[Unit]\n"
        f"Description=mfe-deploy: {timer.timer_description}\n\n"
        "[Timer]\n"
        f"OnCalendar={on_calendar(timer.schedule)}\n"
        "Persistent=true\n"
        "RandomizedDelaySec=60\n\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    )
    return {f"{timer.name}.service": service, f"{timer.name}.timer": units}
