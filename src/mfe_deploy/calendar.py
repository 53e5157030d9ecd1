"""Cron schedules as systemd's OnCalendar, for the units that `backup schedule` and `jobs schedule` write."""

from __future__ import annotations

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
