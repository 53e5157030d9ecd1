"""`migrate lint`: statements in a migration that break the code still running, or lock a table for long.

Pure: text in, findings out. A deploy runs new migrations while the old release still serves, and a
rollback runs old code against the new schema, so a migration must be expand-only to be safe both ways.
A file may declare itself so with a `-- mfe: compatible` line; the lint refuses that header on a file
with any breaking statement. Down migrations (`*.down.sql`) are destructive by nature and not linted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

COMPATIBLE = re.compile(r"^\s*--\s*mfe:\s*compatible\s*$", re.MULTILINE | re.IGNORECASE)


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    rule: str
    message: str
    breaking: bool  # old code fails against the new schema (vs. only a long lock)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.rule}: {self.message}"


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: re.Pattern[str]
    message: str
    breaking: bool
    unless: re.Pattern[str] | None = None  # the statement is fine when this matches too

    def matches(self, statement: str) -> bool:
        return bool(self.pattern.search(statement)) and not (self.unless and self.unless.search(statement))


def _rule(name: str, pattern: str, message: str, *, breaking: bool = True, unless: str | None = None) -> Rule:
    flags = re.IGNORECASE | re.DOTALL
    return Rule(name, re.compile(pattern, flags), message, breaking, re.compile(unless, flags) if unless else None)


RULES = (
    _rule("drop-table", r"^DROP\s+TABLE\b", "drops a table the running code may read"),
    _rule("drop-column", r"^ALTER\s+TABLE\b.*\bDROP\s+COLUMN\b", "drops a column the running code may read"),
    _rule("rename", r"^ALTER\s+TABLE\b.*\bRENAME\b", "renames what the running code names: add, copy, then drop later"),
    _rule(
        "type-change",
        r"^ALTER\s+TABLE\b.*\bALTER\s+(COLUMN\s+)?\S+\s+(SET\s+DATA\s+)?TYPE\b",
        "changes a column's type: the table is rewritten under an exclusive lock, and old code may break",
    ),
    _rule(
        "set-not-null",
        r"^ALTER\s+TABLE\b.*\bALTER\s+(COLUMN\s+)?\S+\s+SET\s+NOT\s+NULL\b",
        "makes a column NOT NULL: old code that leaves it out fails (and the table is scanned under lock)",
    ),
    _rule(
        "not-null-without-default",
        r"^ALTER\s+TABLE\b.*\bADD\s+(COLUMN\s+)?(?!CONSTRAINT\b).*\bNOT\s+NULL\b",
        "adds a NOT NULL column without a default: fails on a table with rows, and old code cannot insert",
        unless=r"\bDEFAULT\b",
    ),
    _rule("truncate", r"^TRUNCATE\b", "deletes every row of a table"),
)
INDEX = re.compile(
    r"^CREATE\s+(UNIQUE\s+)?INDEX\s+(?!CONCURRENTLY\b)(?:IF\s+NOT\s+EXISTS\s+)?\S+\s+ON\s+(?:ONLY\s+)?(\S+)", re.I
)
CREATE_TABLE = re.compile(r"^CREATE\s+(?:UNLOGGED\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?([^\s(]+)", re.IGNORECASE)


def statements(sql: str) -> list[tuple[int, str]]:
    """The statements of a file with the line each starts on; comments dropped, quoted text kept whole."""
    out: list[tuple[int, str]] = []
    current: list[str] = []
    line, start = 1, 0
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end
            continue
        if sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            stop = n if end < 0 else end + 2
            line += sql.count("\n", i, stop)
            i = stop
            continue
        dollar = re.match(r"\$[A-Za-z_]*\$", sql[i:]) if c == "$" else None
        if c == "'" or dollar is not None:
            close = "'" if dollar is None else dollar.group(0)
            end = sql.find(close, i + len(close))
            stop = n if end < 0 else end + len(close)
            if not "".join(current).strip():
                start = line
            current.append(sql[i:stop])
            line += sql.count("\n", i, stop)
            i = stop
            continue
        if c == ";":
            text = " ".join("".join(current).split())
            if text:
                out.append((start, text))
            current = []
            i += 1
            continue
        if not c.isspace() and not "".join(current).strip():
            start = line
        current.append(c)
        if c == "\n":
            line += 1
        i += 1
    text = " ".join("".join(current).split())
    if text:
        out.append((start, text))
    return out


def lint(name: str, sql: str) -> list[Finding]:
    found: list[Finding] = []
    created: set[str] = set()
    for line, statement in statements(sql):
        table = CREATE_TABLE.match(statement)
        if table is not None:
            created.add(table.group(1).lower())
        for rule in RULES:
            if rule.matches(statement):
                found.append(Finding(name, line, rule.name, rule.message, rule.breaking))
        index = INDEX.match(statement)
        if index is not None and index.group(2).lower() not in created:
            why = "builds an index on an existing table under a lock that blocks its writes until done"
            found.append(Finding(name, line, "index-locks-writes", why, breaking=False))
    header = COMPATIBLE.search(sql)
    if header is not None:
        breaking = [f.rule for f in found if f.breaking]
        if breaking:
            line = sql.count("\n", 0, header.start()) + 1
            why = f"declared compatible, but old code breaks on it ({', '.join(breaking)})"
            found.append(Finding(name, line, "compatible-header", why, breaking=True))
    return found


def lint_files(paths: list[Path], base: Path) -> list[Finding]:
    found: list[Finding] = []
    for path in paths:
        if path.name.endswith(".down.sql"):
            continue
        shown = str(path.relative_to(base)) if path.is_relative_to(base) else str(path)
        found += lint(shown, path.read_text(encoding="utf-8", errors="replace"))
    return found
