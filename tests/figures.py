"""Figures a test measures as it runs (failed requests under load, /health answers that were not 200),
printed by the test and, in a run of tests/groups.py, collected for its summary: CI's log shows every
load scenario's counts, not only those of a test that failed."""

from __future__ import annotations

import os


def record(text: str) -> None:
    """Print `text` and append it, with the test's id, to the run's figures file (MFE_TEST_FIGURES)."""
    print(text)
    path = os.environ.get("MFE_TEST_FIGURES")
    if not path:
        return
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
    line = f"{test}: {' '.join(text.split())}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)  # one write: lines of groups never mix
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
