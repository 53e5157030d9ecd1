"""A service's variables from its env file, read before anything else runs, then the process's own user.

A container's environment is readable by anyone who can inspect it (`docker inspect`, /proc/1/environ),
so mfe-deploy mounts each service's env file at /run/secrets/env instead: mode 0600, owned by the CLI's
user on the host. The service starts as root with only CAP_SETUID, CAP_SETGID and CAP_DAC_READ_SEARCH,
reads the file, and becomes its own user (10001) before it imports its application: from then on it
holds no capability and cannot read the file again. Where the file is already the user's own (a Swarm secret, the
local runtime), no switch is needed and none is made.
"""

from __future__ import annotations

import os


def read(path: str) -> dict[str, str]:
    """KEY='value' lines as mfe-deploy writes them (single quotes: taken literally); # comments."""
    values = {}
    with open(path, encoding="utf-8", newline="") as handle:
        lines = handle.read().split("\n")  # only \n ends a line: text mode also splits on \r
    for raw in lines:
        line = raw.strip(" \t")
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip(" \t")] = value
    return values


def load(path: str | None, user: str | None) -> None:
    """Puts the file's variables into this process's environment (not its initial one, which is what
    /proc/PID/environ shows), then switches to `user` (UID[:GID]) when running as root."""
    if path is not None:
        os.environ.update(read(path))
    if user is not None and os.getuid() == 0:
        uid, _, gid = user.partition(":")
        os.setgroups([])
        os.setgid(int(gid or uid))
        os.setuid(int(uid))
        home = os.environ.get("HOME", "")
        if not home or not os.access(home, os.R_OK | os.X_OK):
            # root's HOME, kept from the start, is closed to this user: anything that looks in it (libpq for a
            # client certificate under ~/.postgresql) fails on "permission denied" instead of finding nothing.
            os.environ["HOME"] = "/tmp"  # noqa: S108 - a container's own tmpfs; nothing is written there
