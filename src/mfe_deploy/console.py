"""The one printer. Everything the CLI shows goes through here; every known secret is masked on the way."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, TextIO

MASK = "***"


class Console:
    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self._out = out or sys.stdout
        self._err = err or sys.stderr
        self._secrets: list[str] = []
        self.plain = False  # set for --json: no live views, whatever the terminal

    @property
    def live(self) -> bool:
        """Live views (spinners, bars) on a terminal; plain lines in CI logs, with NO_COLOR or --json."""
        return self._err.isatty() and not os.environ.get("NO_COLOR") and not self.plain

    def add_secrets(self, values: Iterable[str]) -> None:
        # Longest first so that a secret containing another is masked whole.
        self._secrets = sorted({*self._secrets, *(v for v in values if v)}, key=len, reverse=True)

    def mask(self, text: str) -> str:
        for value in self._secrets:
            text = text.replace(value, MASK)
        return text

    def print(self, text: str = "") -> None:
        self._out.write(self.mask(text) + "\n")
        self._out.flush()

    def info(self, text: str) -> None:
        self._err.write(self.mask(text) + "\n")
        self._err.flush()

    def warn(self, text: str) -> None:
        self.info(f"warning: {text}")

    def error(self, lines: Sequence[str]) -> None:
        # Colour on a terminal only, and never with NO_COLOR set to anything (no-color.org).
        red, reset = ("\x1b[31m", "\x1b[0m") if self._err.isatty() and not os.environ.get("NO_COLOR") else ("", "")
        for line in lines:
            self._err.write(f"{red}error:{reset} {self.mask(line)}\n")
        self._err.flush()

    def json(self, value: Any) -> None:
        self.print(json.dumps(value, indent=2, sort_keys=True, default=str))

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[object]], empty: str | None = None) -> None:
        """A plain aligned table: stable for scripts and tests, readable for people. `empty`: the line shown
        instead of a bare header when there is no row."""
        if not rows and empty is not None:
            self.print(empty)
            return
        cells = [[str(c) for c in columns], *[[str(c) for c in row] for row in rows]]
        widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
        for row in cells:
            self.print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())

    @contextmanager
    def status(self, message: str) -> Iterator[Waiting]:
        """Progress for a wait: a spinner with the latest news on a terminal; plain lines otherwise (CI logs,
        NO_COLOR), one more each time the news changes (never for the clock alone)."""
        if not self.live:
            self.info(f"... {message}")
            yield _LineWaiting(self)
            return
        from rich.console import Console as RichConsole

        with RichConsole(file=self._err).status(self.mask(message)) as spinner:
            yield _LiveWaiting(self, spinner, message)

    @contextmanager
    def progress(self) -> Iterator[Progress]:
        """Byte progress for transfers (dumps, restores, checksums): bars on a terminal, one line per
        finished item otherwise."""
        if not self.live:
            yield _LineProgress(self)
            return
        from rich.console import Console as RichConsole
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TextColumn,
            TimeElapsedColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as RichProgress

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeElapsedColumn(),
        )
        with RichProgress(*columns, console=RichConsole(file=self._err), transient=False) as bars:
            yield _BarProgress(self, bars)


class Waiting(Protocol):
    def update(self, news: str, clock: str = "") -> None: ...


class _LineWaiting:
    def __init__(self, console: Console) -> None:
        self.console, self.last = console, ""

    def update(self, news: str, clock: str = "") -> None:
        if news != self.last:
            self.last = news
            self.console.info(f"... {news}" + (f" ({clock})" if clock else ""))


class _LiveWaiting:
    def __init__(self, console: Console, spinner: Any, message: str) -> None:
        self.console, self.spinner, self.message = console, spinner, message

    def update(self, news: str, clock: str = "") -> None:
        self.spinner.update(self.console.mask(f"{self.message}: {news}" + (f" ({clock})" if clock else "")))


class Task(Protocol):
    def advance(self, amount: int) -> None: ...
    def finish(self, note: str) -> None: ...


class Progress(Protocol):
    def task(self, name: str, total: int | None = None) -> Task: ...


def human_size(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


class _LineTask:
    def __init__(self, console: Console, name: str) -> None:
        self.console, self.name, self.done, self.started = console, name, 0, time.monotonic()
        self._lock = threading.Lock()

    def advance(self, amount: int) -> None:
        with self._lock:
            self.done += amount

    def finish(self, note: str) -> None:
        seconds = time.monotonic() - self.started
        self.console.info(f"  {self.name}: {note} ({human_size(self.done)}, {seconds:.1f}s)")


class _LineProgress:
    def __init__(self, console: Console) -> None:
        self.console = console

    def task(self, name: str, total: int | None = None) -> Task:
        return _LineTask(self.console, name)


class _BarTask:
    def __init__(self, bars: Any, task_id: Any, name: str) -> None:
        self.bars, self.task_id, self.name = bars, task_id, name

    def advance(self, amount: int) -> None:
        self.bars.advance(self.task_id, amount)

    def finish(self, note: str) -> None:
        task = self.bars.tasks[self.task_id]
        self.bars.update(self.task_id, total=task.completed, description=f"{self.name}: {note}")


class _BarProgress:
    def __init__(self, console: Console, bars: Any) -> None:
        self.console, self.bars = console, bars

    def task(self, name: str, total: int | None = None) -> Task:
        return _BarTask(self.bars, self.bars.add_task(self.console.mask(name), total=total), name)
