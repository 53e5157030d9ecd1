"""The error tree. Every error a user can cause is an MfeError with an exit code and a message."""

from __future__ import annotations

from dataclasses import dataclass


class MfeError(Exception):
    exit_code = 1
    is_error = True  # printed as `error: ...` (in red on a terminal); False: a plain line, still its exit code

    def lines(self) -> list[str]:
        return [str(self)]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file, located as precisely as the source allows."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(MfeError):
    """Bad input: an environment file, a secret or a reference. Exit code 2, like a usage error."""

    exit_code = 2

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems

    def lines(self) -> list[str]:
        return [str(p) for p in self.problems]


class UnknownEnvironment(MfeError):
    exit_code = 2


class UsageError(MfeError):
    """A bad argument on the command line: exit 2."""

    exit_code = 2


class NotInSync(MfeError):
    """`plan` or `diff` found something `up` would change: exit 1, a gate for CI; not an error."""

    exit_code = 1
    is_error = False


class BundleDrift(MfeError):
    """`render --check` found files that differ from what would be rendered."""

    exit_code = 1


class CommandFailed(MfeError):
    exit_code = 1


class MigrationError(MfeError):
    exit_code = 1
