"""The local runtime's logs: one file per program (supervisord writes them), tailed and followed."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from mfe_deploy.runtimes.local.site import Site


def log_file(rt: Site, unit: str) -> Path:
    return rt.layout.logs / f"{unit}.log"


def tail(rt: Site, unit: str, lines: int) -> str:
    path = log_file(rt, unit)
    if not path.exists():
        return f"  ({path} is empty)"
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join(f"  {line}" for line in text)


def logs(
    rt: Site, unit: str | None, tail: int | None, follow: bool, needle: str | None, write: Callable[[str], None]
) -> None:
    chosen = [unit] if unit else rt.units()
    prefix = len(chosen) > 1
    offsets = {}
    for name in chosen:
        path = log_file(rt, name)
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        lines = [line for line in lines if needle is None or needle in line]
        for line in lines[-tail:] if tail is not None else lines:
            write(f"{name} | {line}" if prefix else line)
        offsets[name] = path.stat().st_size if path.exists() else 0
    while follow:
        time.sleep(0.5)
        for name in chosen:
            path = log_file(rt, name)
            if not path.exists() or path.stat().st_size <= offsets[name]:
                continue
            with path.open("rb") as handle:
                handle.seek(offsets[name])
                data = handle.read()
            offsets[name] += len(data)
            for line in data.decode(errors="replace").splitlines():
                if needle is None or needle in line:
                    write(f"{name} | {line}" if prefix else line)
