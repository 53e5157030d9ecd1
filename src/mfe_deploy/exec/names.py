"""Names that arrive from outside (a backup's manifest, a bundle's index, a remote listing, a backup id)
before they become paths. A bare name is one path component; a relative path is bare names joined by `/`.
Whatever fails is refused, never cleaned up into something else."""

from __future__ import annotations

from pathlib import PurePath
from typing import TypeVar

from mfe_deploy.errors import MfeError
from mfe_deploy.exec.text import control_character

MAX_NAME = 255  # bytes: what Linux file systems allow in one component
P = TypeVar("P", bound=PurePath)


class UnsafeName(MfeError):
    exit_code = 1


def is_bare(name: str) -> bool:
    return (
        0 < len(name.encode("utf-8", "surrogateescape")) <= MAX_NAME
        and name not in (".", "..")
        and "/" not in name
        and control_character(name) is None
    )


def is_relative(path: str) -> bool:
    return 0 < len(path) <= 4096 and all(is_bare(part) for part in path.split("/"))


def bare(name: str, what: str) -> str:
    """`name` itself, or UnsafeName naming `what` it was meant to be."""
    if not is_bare(name):
        raise UnsafeName(f"{what} {name[:80]!r} is not a plain file name (no '/', '.', '..' or control characters)")
    return name


def child(folder: P, name: str, what: str) -> P:
    """`folder / name` for a bare name only: what comes from outside never leaves its folder."""
    return folder / bare(name, what)
