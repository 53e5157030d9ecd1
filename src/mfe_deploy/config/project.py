"""Where the project is: the folder that holds environments/. Light on purpose: every command asks it at
start-up, before anything heavier is imported (`--help` and `version` need nothing more)."""

from __future__ import annotations

from pathlib import Path

ENV_DIR = "environments"


def find_project(start: Path) -> Path | None:
    """The nearest folder holding environments/: `start` or one of its parents (as compose finds its file)."""
    for folder in (start, *start.parents):
        if (folder / ENV_DIR).is_dir():
            return folder
    return None
