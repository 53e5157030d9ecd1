"""`mfe-deploy watch`: what changed since the last look, as notifications: one per change, never one per
check. Pure: a look is a value, and the changes between two looks are events."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# A unit that came back this many times within LOOP_SECONDS is restarting in a loop.
LOOP_RESTARTS = 3
LOOP_SECONDS = 300.0


@dataclass(frozen=True)
class Change:
    """A notification to send: its event name, one line, and details."""

    name: str
    summary: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Look:
    """What one check saw: each unit's health and process id (None: not running; a unit the runtime gives no
    process id for, a container, is left out), and the backups' problem."""

    time: float
    healthy: dict[str, bool]
    pids: dict[str, int | None]
    backup_problem: str | None = None


@dataclass
class Memory:
    """What the watcher keeps between looks (a file, so that a watch run by a timer is one watch)."""

    last: Look | None = None
    down: set[str] = field(default_factory=set)  # units reported unhealthy and not recovered since
    restarts: dict[str, list[float]] = field(default_factory=dict)  # times a unit's process was seen replaced
    looping: set[str] = field(default_factory=set)  # units reported restarting in a loop
    stale: bool = False

    def to_json(self) -> str:
        last = None if self.last is None else self.last.__dict__
        data = {"last": last, "down": sorted(self.down), "restarts": self.restarts, "looping": sorted(self.looping)}
        return json.dumps({**data, "stale": self.stale}, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Memory:
        data: dict[str, Any] = json.loads(text)
        last = Look(**data["last"]) if data.get("last") else None
        return cls(
            last=last,
            down=set(data.get("down", [])),
            restarts=dict(data.get("restarts", {})),
            looping=set(data.get("looping", [])),
            stale=bool(data.get("stale")),
        )


def changes(memory: Memory, look: Look, env: str) -> list[Change]:
    """The events since memory's last look (memory is updated): a unit unhealthy, or whose process was
    replaced since the last look (it was down in between), is reported once, and recovered once it is
    healthy again; a unit replaced LOOP_RESTARTS times within LOOP_SECONDS is restarting, once; the
    backups' problem appearing is backup.stale, once."""
    events = []
    before = memory.last
    for unit, healthy in look.healthy.items():
        replaced = (
            before is not None
            and before.pids.get(unit) is not None
            and look.pids.get(unit) is not None
            and before.pids[unit] != look.pids[unit]
        )
        if replaced:
            times = [t for t in memory.restarts.get(unit, []) if look.time - t <= LOOP_SECONDS] + [look.time]
            memory.restarts[unit] = times
            if len(times) >= LOOP_RESTARTS and unit not in memory.looping:
                memory.looping.add(unit)
                summary = f"{unit} of {env} restarted {len(times)} times in {LOOP_SECONDS / 60:.0f} minutes"
                events.append(Change("service.restarting", summary, {"service": unit, "restarts": len(times)}))
        # No process when its id was read: down in this look, whatever its probe said a moment before (a look
        # taken across a restart saw the old process answer, then the new one still starting).
        running = look.pids.get(unit, 0) is not None
        if (not healthy or not running or replaced) and unit not in memory.down:
            memory.down.add(unit)
            why = "it does not answer healthy" if not healthy else "its process was replaced (it went down)"
            why = why if running else "its process is not running"
            events.append(Change("service.unhealthy", f"{unit} of {env}: {why}", {"service": unit}))
        elif healthy and running and not replaced and unit in memory.down:
            memory.down.discard(unit)
            events.append(Change("service.recovered", f"{unit} of {env} is healthy again", {"service": unit}))
    for unit in list(memory.looping):  # a loop is over once no restart is left in the window
        if not [t for t in memory.restarts.get(unit, []) if look.time - t <= LOOP_SECONDS]:
            memory.looping.discard(unit)
    if look.backup_problem is not None and not memory.stale:
        memory.stale = True
        events.append(Change("backup.stale", f"{env}: {look.backup_problem}"))
    elif look.backup_problem is None:
        memory.stale = False
    memory.last = look
    return events
