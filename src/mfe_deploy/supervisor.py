"""supervisorctl as commands and parsers: what the local runtime asks of supervisord."""

from __future__ import annotations

import configparser
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

_STATUS = re.compile(r"^(?P<name>\S+)\s+(?P<state>[A-Z]+)\s*(?P<rest>.*)$")
_PID = re.compile(r"pid (\d+)")


@dataclass(frozen=True)
class ProgramState:
    name: str
    state: str  # RUNNING, STARTING, BACKOFF, STOPPED, EXITED, FATAL, STOPPING, UNKNOWN
    pid: int | None
    detail: str

    @property
    def running(self) -> bool:
        return self.state == "RUNNING"


def parse_status(text: str) -> dict[str, ProgramState]:
    """`supervisorctl status` output, one program a line:
    `postgres    RUNNING   pid 4242, uptime 0:01:02` or `auth   FATAL     Exited too quickly`."""
    states = {}
    for line in text.splitlines():
        match = _STATUS.match(line.strip())
        if not match:
            continue
        pid = _PID.search(match["rest"])
        states[match["name"]] = ProgramState(
            match["name"],
            match["state"],
            int(pid[1]) if pid and match["state"] == "RUNNING" else None,
            match["rest"].strip(),
        )
    return states


def program_fingerprints(conf_text: str, names: Sequence[str]) -> dict[str, str]:
    """A digest of each named program's section of a supervisord.conf: `supervisorctl update` restarts a
    program whose section changed, and only then."""
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.read_string(conf_text)
    found = {}
    for name in names:
        section = f"program:{name}"
        if parser.has_section(section):
            items = sorted(parser.items(section))
            found[name] = hashlib.sha256(repr(items).encode()).hexdigest()[:16]
    return found
