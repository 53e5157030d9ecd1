"""The one printer. Everything the CLI shows goes through here; every known secret is masked on the way."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

MASK = "***"


class Console:
    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self._out = out or sys.stdout
        self._err = err or sys.stderr
        self._secrets: list[str] = []

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

    def error(self, lines: Sequence[str]) -> None:
        red, reset = ("\x1b[31m", "\x1b[0m") if self._err.isatty() else ("", "")
        for line in lines:
            self._err.write(f"{red}error:{reset} {self.mask(line)}\n")
        self._err.flush()

    def json(self, value: Any) -> None:
        self.print(json.dumps(value, indent=2, sort_keys=True, default=str))

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        """A plain aligned table: stable for scripts and tests, readable for people."""
        cells = [[str(c) for c in columns], *[[str(c) for c in row] for row in rows]]
        widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
        for row in cells:
            self.print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())

    @contextmanager
    def status(self, message: str) -> Iterator[None]:
        """Progress for a wait: a spinner on a terminal, one plain line otherwise (CI logs)."""
        if not self._err.isatty():
            self.info(f"... {message}")
            yield
            return
        from rich.console import Console as RichConsole

        with RichConsole(file=self._err).status(self.mask(message)):
            yield
