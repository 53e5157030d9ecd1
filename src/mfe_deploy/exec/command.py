"""A command line as a value: argv, extra environment, working directory. str() is safe to print."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePath

from mfe_deploy.exec.secret import Secret


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    env: Mapping[str, str | Secret] = field(default_factory=dict)
    cwd: PurePath | None = None
    # False: the process gets `env` alone, none of this process's environment (which holds the secrets and
    # whatever else the operator exported): a program the local runtime starts, a service's one-off command.
    inherit: bool = True
    input: str | Secret | None = None  # what the process reads on stdin (a script, which may hold a password)

    def environ(self) -> dict[str, str]:
        return {k: v.reveal() if isinstance(v, Secret) else v for k, v in self.env.items()}

    def __str__(self) -> str:
        assignments = [f"{k}={shlex.quote(str(v))}" for k, v in sorted(self.env.items())]
        return " ".join([*assignments, shlex.join(self.argv)])
